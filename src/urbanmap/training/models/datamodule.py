"""Lightning data for patch classifiers: validation split, normalisation, augmentation.

`PatchDataModule` holds the patches of one training fold in memory:

- a validation split (``validation_fraction``, stratified, from the seed) carved from
  the training fold, for early stopping; the test fold is never seen;
- per-band normalisation ``(x - mean) / std``, with mean and std computed on the fit
  part of the training fold only (not its validation split, not the test fold);
- augmentation of training batches with `RandomDihedral`: each patch gets one of the 8
  flips / 90-degree rotations, drawn independently (a cell seen from above has no
  preferred orientation);
- batches drawn by index from in-memory tensors (one fancy-index per batch, no per-sample
  collate), shuffled by a seeded generator, in the main process (num_workers 0), so an
  epoch is the same on every run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class RandomDihedral(v2.Transform):
    """A random element of the dihedral group (4 rotations x optional flip) per sample of
    a batch (N, C, H, W) of square images, with torchvision's v2 flip and torch.rot90."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """One draw per sample: k in 0..7 (k >= 4: flipped; k % 4: quarter turns)."""
        n = flat_inputs[0].shape[0]
        return {"k": torch.randint(0, 8, (n,))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """The batch (N, C, H, W) with each sample flipped and rotated by its draw."""
        k = params["k"]
        flip = (k >= 4).view(-1, *([1] * (inpt.ndim - 1)))
        x = torch.where(flip, TF.horizontal_flip(inpt), inpt)
        rot = k % 4
        for r in (1, 2, 3):  # three vectorised rotations of the samples that draw them
            sel = rot == r
            if sel.any():
                x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        return x


def band_stats(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (b,) float32 over all pixels of (n, b, p, p) patches
    (accumulated in float64; a band with std 0 gets std 1)."""
    mean = patches.mean(axis=(0, 2, 3), dtype=np.float64)
    std = patches.std(axis=(0, 2, 3), dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def normalise(patches: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(n, b, p, p) reflectance -> float32 tensor of (x - mean) / std per band."""
    x = (patches - mean[None, :, None, None]) / std[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray(x, np.float32))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit index, validation index) of a stratified split; no validation if fraction 0."""
    if not fraction:
        return np.arange(len(y)), np.array([], np.int64)
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    fit, val = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    return np.sort(fit), np.sort(val)


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int) -> DataLoader[Any]:
    data = TensorDataset(x, y)
    base = RandomSampler(data, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(data)
    # batch_size=None: the dataset is indexed with a whole batch of indices at once
    return DataLoader(data, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None, num_workers=0)


class PatchDataModule(L.LightningDataModule):
    """One training fold (see module docstring).

    Args:
        patches: (n, b, p, p) float32 reflectance; y: (n,) 0/1 labels.
    """

    def __init__(self, patches: np.ndarray, y: np.ndarray, batch_size: int = 128,
                 validation_fraction: float = 0.1, seed: int = 0, augment: bool = True):
        super().__init__()
        self.batch_size, self.seed = int(batch_size), int(seed)
        fit, val = stratified_split(np.asarray(y), validation_fraction, seed)
        self.mean, self.std = band_stats(patches[fit])
        labels = torch.from_numpy(np.asarray(y, np.int64))
        self.x_fit, self.y_fit = normalise(patches[fit], self.mean, self.std), labels[fit]
        self.x_val, self.y_val = normalise(patches[val], self.mean, self.std), labels[val]
        self.augment = RandomDihedral() if augment else None

    @property
    def has_validation(self) -> bool:
        """Whether the fold has a validation split (validation_fraction > 0)."""
        return len(self.y_val) > 0

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled (seeded) batches of the fit part."""
        return _loader(self.x_fit, self.y_fit, self.batch_size, True, self.seed)

    def val_dataloader(self) -> DataLoader[Any] | list[Any]:
        """Batches of the validation split in order, or none."""
        return _loader(self.x_val, self.y_val, 4 * self.batch_size, False, self.seed) if self.has_validation else []

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches (RandomDihedral); validation batches pass unchanged."""
        x, y = batch
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        return x, y
