"""torchvision's ResNet-18 with a first layer for multispectral patches.

The first convolution takes ``in_channels`` bands (6) instead of RGB. Weights are
optional and only ever read from a local file (``model.net.weights``: a safetensors
file or a ``torch.save`` state_dict read with ``weights_only=True``); nothing is
downloaded. ImageNet-style weights (3-channel conv1, 1,000 classes) are adapted: the
red, green and blue filters go to the bands of those names, every other band gets the
mean RGB filter, all scaled by 3 / in_channels so activations keep their size; the
final layer is re-initialised for ``num_classes``.

``small_input``: a 33-pixel patch is 17 pixels after the stride-2 stem and 9 after its
max-pool; with ``small_input: true`` the stem keeps stride 1 and drops the max-pool
(about 13 times the compute), for more spatial detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from urbanmap.core.errors import InputError
from urbanmap.imagery.landsat import BANDS

RGB = ("red", "green", "blue")  # ImageNet's channel order


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local safetensors or torch file, without running code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model.net.weights not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch / safetensors raise many types on a bad file
        raise InputError(f"{path}: cannot read weights: {exc}".splitlines()[0]) from exc


def adapt_first_conv(weight: torch.Tensor, bands: Sequence[str]) -> torch.Tensor:
    """(64, 3, k, k) RGB filters -> (64, len(bands), k, k) (see module docstring)."""
    mean = weight.mean(dim=1)
    out = torch.stack([weight[:, RGB.index(b)] if b in RGB else mean for b in bands], dim=1)
    return out * (3.0 / len(bands))


def resnet18(
    in_channels: int = 6,
    patch_size: int = 33,
    num_classes: int = 2,
    weights: str | None = None,
    small_input: bool = False,
    bands: Sequence[str] | None = None,
) -> nn.Module:
    """ResNet-18 for (N, in_channels, patch_size, patch_size) input -> (N, num_classes)."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None)
    if weights:
        state = read_state_dict(weights)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"{weights}: not a ResNet-18 state_dict: {exc}".splitlines()[0]) from exc
    bands = list(bands or BANDS[:in_channels])
    if len(bands) != in_channels:
        raise InputError(f"model.net: {len(bands)} band names for {in_channels} input channels")
    old = net.conv1
    net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=1 if small_input else 2, padding=3, bias=False)
    if weights:
        with torch.no_grad():
            net.conv1.weight.copy_(adapt_first_conv(old.weight, bands))
    if small_input:
        net.maxpool = nn.Identity()
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net
