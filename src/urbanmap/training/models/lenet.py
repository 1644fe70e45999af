"""LeNet for multispectral patches: the pilot's CNN.

Two convolution + max-pool blocks and dense layers with dropout, for ``in_channels``
bands of ``patch_size`` x ``patch_size`` pixels (6 x 33 x 33 by default). Input: (N, C,
H, W) normalised reflectance; output: (N, num_classes) logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from urbanmap.core.errors import InputError


class LeNet(nn.Module):
    """conv(k) -> ReLU -> maxpool(2), per entry of `conv_channels`; then dense layers
    of `dense_units` with ReLU and dropout; then a linear layer to the class logits."""

    def __init__(
        self,
        in_channels: int = 6,
        patch_size: int = 33,
        num_classes: int = 2,
        conv_channels: Sequence[int] = (32, 64),
        kernel_size: int = 5,
        dense_units: Sequence[int] = (256, 64),
        dropout: float = 0.5,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev, size = in_channels, patch_size
        for ch in conv_channels:
            layers += [nn.Conv2d(prev, ch, kernel_size), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            prev, size = ch, (size - kernel_size + 1) // 2
            if size < 1:
                raise InputError(
                    f"model.net: {len(conv_channels)} conv blocks of kernel {kernel_size} "
                    f"do not fit a {patch_size}-pixel patch"
                )
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = [nn.Flatten()]
        prev = prev * size * size
        for units in dense_units:
            dense += [nn.Linear(prev, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = units
        dense.append(nn.Linear(prev, num_classes))
        self.classifier = nn.Sequential(*dense)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) normalised patches -> (N, num_classes) logits."""
        return self.classifier(self.features(x))
