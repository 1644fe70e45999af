"""Patch classifiers behind one interface, built from the `model` config group.

Every classifier takes patches ``(n, b, p, p)`` float32 reflectance (bands in the order
of the patches file, row 0 north) and predicts ``p_urban`` (n,) in 0..1:

- ``model.kind: sklearn`` -> `extra_trees.ExtraTreesPatchClassifier` (features.py on the
  patch, then a scikit-learn estimator from ``model.estimator._target_``), saved with skops;
- ``model.kind: torch`` -> `torch_model.TorchPatchClassifier` (a network from
  ``model.net._target_``: LeNet or ResNet-18, trained with Lightning), saved as a
  safetensors state_dict beside a JSON config.

Torch is imported only when a torch model is built or loaded. A saved model is a folder
with the model file(s) and ``model_card.json`` (bands, patch size, pixel size, features
or normalisation statistics): `load` reads the card, checks it and loads the model without
executing code from the files (skops with an allow-list of types; safetensors + JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from omegaconf import OmegaConf

from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_directory
from urbanmap.training.models.extra_trees import ExtraTreesPatchClassifier, build_estimator

CARD = "model_card.json"


class PatchClassifier(Protocol):
    """What train, evaluate and predict need from a model."""

    def fit(self, patches: np.ndarray, y: np.ndarray) -> PatchClassifier:
        """Patches (n, b, p, p) float32, y (n,) 0/1 (1 = urban)."""

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        """(n,) float64 probability of urban."""

    def save(self, folder: Path) -> list[str]:
        """Write the model file(s) into `folder`; return their names."""

    def card(self) -> dict[str, Any]:
        """Model-specific entries of the model card (features, normalisation, ...)."""


def _as_dict(model_cfg: Any) -> dict[str, Any]:
    """The `model` config section (a DictConfig or a dict) as a plain dict."""
    container = OmegaConf.to_container(model_cfg, resolve=True) if not isinstance(model_cfg, dict) else model_cfg
    if not isinstance(container, dict):
        raise InputError(f"model: expected a config section, got {type(container).__name__}")
    return cast(dict[str, Any], container)  # a config section's keys are names


def build(model_cfg: Any, bands: Sequence[str], patch_size: int, seed: int, threads: int = 1) -> PatchClassifier:
    """An unfitted classifier from the `model` config section (a DictConfig or a dict)."""
    cfg = _as_dict(model_cfg)
    kind = cfg.get("kind")
    if kind == "sklearn":
        return ExtraTreesPatchClassifier(cfg, list(bands), seed)
    if kind == "torch":
        from urbanmap.training.models.torch_model import TorchPatchClassifier

        return TorchPatchClassifier(cfg, list(bands), int(patch_size), seed, threads)
    raise InputError(f"model.kind: {kind!r} is not a model kind (sklearn or torch)")


def check(model_cfg: Any, seed: int) -> None:
    """InputError naming the `model` key that is wrong, before any file is read: the
    scikit-learn estimator is built (and its parameters checked), a torch model's trainer
    and optimizer settings are checked (its network needs the patches' bands)."""
    cfg = _as_dict(model_cfg)
    if cfg.get("kind") == "sklearn":
        build_estimator(cfg, seed)
    elif cfg.get("kind") == "torch":
        from urbanmap.training.models.torch_model import check_trainer

        check_trainer(cfg.get("trainer") or {}, cfg.get("optimizer") or {})
    else:
        raise InputError(f"model.kind: {cfg.get('kind')!r} is not a model kind (sklearn or torch)")


def save(clf: PatchClassifier, folder: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write the model files and `model_card.json` (general `card` entries + the model's
    own) into `folder`, which is replaced whole (a temporary folder renamed into place)."""
    with atomic_directory(folder) as tmp:
        files = clf.save(tmp)
        full = {**card, **clf.card(), "files": files}
        (tmp / CARD).write_text(json.dumps(full, indent=2) + "\n")
    return full


def read_card(folder: Path) -> dict[str, Any]:
    """The model card of a saved model folder; InputError if missing or unreadable."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise InputError(f"{path}: model card not found")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from exc
    check_card(card, path)
    return cast(dict[str, Any], card)


def check_card(card: Any, path: Path) -> None:
    """InputError naming the card and the field that is missing or of the wrong kind:
    `bands` a list of band names, `patch_size` a whole number of pixels >= 2,
    `cell_size` and `pixel_size` positive metres (when present)."""
    if not isinstance(card, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(card).__name__}")
    bands = card.get("bands")
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
        raise InputError(f"{path}: bands: expected a list of band names, got {bands!r}")
    size = card.get("patch_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise InputError(f"{path}: patch_size: expected a whole number of pixels >= 2, got {size!r}")
    for key in ("cell_size", "pixel_size"):
        value = card.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise InputError(f"{path}: {key}: expected a positive number of metres, got {value!r}")


def load(folder: Path) -> tuple[PatchClassifier, dict[str, Any]]:
    """A fitted classifier and its card from a folder written by `save`."""
    card = read_card(folder)
    kind = card.get("kind")
    if kind == "sklearn":
        return ExtraTreesPatchClassifier.load(Path(folder), card), card
    if kind == "torch":
        from urbanmap.training.models.torch_model import TorchPatchClassifier

        return TorchPatchClassifier.load(Path(folder), card), card
    raise InputError(f"{Path(folder) / CARD}: unknown model kind {kind!r}")
