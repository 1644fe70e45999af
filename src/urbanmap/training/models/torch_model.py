"""Torch patch classifiers (LeNet, ResNet-18) trained with Lightning; safetensors files.

``model.net``: the network, built with ``hydra.utils.instantiate`` from ``_target_``
(`urbanmap.training.models.lenet.LeNet`, `urbanmap.training.models.resnet.resnet18`) and its arguments,
plus ``in_channels``, ``patch_size`` and ``num_classes`` = 2.
``model.optimizer``: AdamW ``lr`` and ``weight_decay``.
``model.trainer``: ``max_epochs``, ``batch_size``, ``early_stopping_patience`` (epochs
without a lower validation loss; the best epoch's weights are kept) and
``validation_fraction`` (share of the training fold held out for early stopping).

Runs are deterministic from the seed: Lightning's seed_everything, deterministic torch
algorithms, seeded shuffling, augmentation from the seeded global generator, data in
the main process.

Saved as ``model.safetensors`` (the state_dict; safetensors holds tensors only) and
``model.json`` (the net config, bands, normalisation). Loading instantiates only nets
listed in `NETS`, so a file cannot name arbitrary code to run.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from urbanmap.core.errors import InputError

WEIGHTS, CONFIG = "model.safetensors", "model.json"

#: Networks a saved model may name (its net `_target_`).
NETS = frozenset({"urbanmap.training.models.lenet.LeNet", "urbanmap.training.models.resnet.resnet18"})

for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class PatchNet(L.LightningModule):
    """A network trained with cross-entropy on (N, C, H, W) normalised patches."""

    def __init__(self, net: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised patches -> (N, 2) logits."""
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one batch, logged as train_loss per epoch."""
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Log the batch's cross-entropy as val_loss (early stopping, KeepBest)."""
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW with the model's lr and weight decay."""
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class KeepBest(L.Callback):
    """Keep the weights of the epoch with the lowest validation loss, in memory, and
    restore them when fitting ends. (Lightning's ModelCheckpoint does this through files;
    a fold's model is small, so a copy in memory avoids writing checkpoints.)"""

    def __init__(self) -> None:
        self.best, self.best_epoch = float("inf"), -1
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Copy the weights when the epoch's validation loss is the lowest so far."""
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and float(loss) < self.best:
            self.best, self.best_epoch = float(loss), trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the best epoch's weights."""
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def build_net(net_cfg: dict[str, Any], in_channels: int, patch_size: int, bands: Sequence[str],
              trusted_only: bool = False) -> torch.nn.Module:
    """The network of `net_cfg` (``_target_`` + arguments) for this input."""
    from hydra.utils import instantiate

    target = net_cfg.get("_target_")
    if trusted_only and target not in NETS:
        raise InputError(f"model.net._target_: {target!r} is not a known network ({', '.join(sorted(NETS))})")
    extra: dict[str, Any] = {"in_channels": in_channels, "patch_size": patch_size, "num_classes": 2}
    if target == "urbanmap.training.models.resnet.resnet18":
        extra["bands"] = list(bands)
    try:
        return instantiate(net_cfg, **extra)
    except InputError:
        raise
    except Exception as exc:  # hydra wraps import and argument errors
        cause = exc.__cause__ if isinstance(exc.__cause__, InputError) else None
        if cause:
            raise cause from exc
        raise InputError(f"model.net: cannot build {target}: {exc}".splitlines()[0].split(", set env var HYDRA_FULL_ERROR")[0]) from None


def seed_all(seed: int, threads: int) -> None:
    """Seed Python, NumPy and torch; deterministic CPU algorithms; `threads` threads."""
    L.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN to expose reads of
    # uninitialised memory; that costs ~15% of a ResNet step and changes no result.
    # torch documents this flag, but its stub of torch.utils.deterministic omits it.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.set_num_threads(max(1, int(threads)))


def check_trainer(trainer: dict[str, Any], optimizer: dict[str, Any]) -> None:
    """InputError naming the model.trainer / model.optimizer key whose value is out of range
    (Lightning reads max_epochs=-1 as "no limit", a negative rate trains uphill)."""
    whole = {"max_epochs": 1, "batch_size": 1, "early_stopping_patience": 0}
    for name, low in whole.items():
        value = trainer.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise InputError(f"model.trainer.{name}: expected a whole number >= {low}, got {value!r}")
    fraction = trainer.get("validation_fraction")
    if fraction is not None and not (isinstance(fraction, int | float) and 0 <= fraction < 1):
        raise InputError(f"model.trainer.validation_fraction: expected a fraction from 0 to below 1, got {fraction!r}")
    for name in ("lr", "weight_decay"):
        value = optimizer.get(name)
        if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
                                      and (name != "lr" or value > 0)):
            raise InputError(f"model.optimizer.{name}: expected a {'positive' if name == 'lr' else 'non-negative'} number, got {value!r}")


class TorchPatchClassifier:
    """A Lightning-trained network behind the PatchClassifier interface."""

    def __init__(self, cfg: dict[str, Any], bands: Sequence[str], patch_size: int, seed: int, threads: int = 1):
        self.cfg, self.bands, self.patch_size = cfg, list(bands), int(patch_size)
        self.seed, self.threads = int(seed), int(threads)
        self.net: torch.nn.Module | None = None
        self.mean: np.ndarray | None = None  # (b,) float32 per-band normalisation
        self.std: np.ndarray | None = None
        self.epochs = self.best_epoch = 0
        check_trainer(cfg.get("trainer") or {}, cfg.get("optimizer") or {})

    def _fitted(self) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
        """The net and its normalisation; RuntimeError before fit (or load)."""
        if self.net is None or self.mean is None or self.std is None:
            raise RuntimeError("the model is not fitted")
        return self.net, self.mean, self.std

    def fit(self, patches: np.ndarray, y: np.ndarray) -> TorchPatchClassifier:
        """Train on (n, b, p, p) patches and (n,) 0/1 labels (model.trainer, model.optimizer)."""
        from lightning.pytorch.callbacks import EarlyStopping

        from urbanmap.training.models.datamodule import PatchDataModule

        t = self.cfg.get("trainer", {})
        opt = self.cfg.get("optimizer", {})
        seed_all(self.seed, self.threads)
        data = PatchDataModule(patches, y, t.get("batch_size", 128), t.get("validation_fraction", 0.1), self.seed)
        net = build_net(dict(self.cfg["net"]), len(self.bands), self.patch_size, self.bands)
        module = PatchNet(net, float(opt.get("lr", 1e-3)), float(opt.get("weight_decay", 0.0)))
        keep = KeepBest()
        callbacks: list[L.Callback] = [keep]
        if data.has_validation and t.get("early_stopping_patience"):
            callbacks.append(EarlyStopping("val_loss", patience=int(t["early_stopping_patience"]), mode="min"))
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_epochs=int(t.get("max_epochs", 10)), deterministic=True,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=callbacks,
            limit_val_batches=1.0 if data.has_validation else 0,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*The number of training batches.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")  # lightning 2.6 on torch 2.12
            trainer.fit(module, datamodule=data)
        self.net, self.mean, self.std = module.net.eval(), data.mean, data.std
        self.epochs, self.best_epoch = trainer.current_epoch, keep.best_epoch
        return self

    def predict_proba(self, patches: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(n,) float64 probability of urban of (n, b, p, p) patches, `batch_size` at a time."""
        from urbanmap.training.models.datamodule import normalise

        if self.net is None:
            raise RuntimeError("predict_proba before fit")
        net, mean, std = self._fitted()
        net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(patches), batch_size):  # batches, to bound memory
                x = normalise(patches[start : start + batch_size], mean, std)
                out.append(torch.softmax(net(x), dim=1)[:, 1].double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def save(self, folder: Path) -> list[str]:
        """Write model.safetensors (the state_dict) and model.json (net config, bands,
        normalisation) into `folder`; return their names."""
        from safetensors.torch import save_file

        net, _, _ = self._fitted()
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, Path(folder) / WEIGHTS, metadata={"format": "pt"})
        (Path(folder) / CONFIG).write_text(json.dumps(self._config(), indent=2) + "\n")
        return [WEIGHTS, CONFIG]

    def _config(self) -> dict[str, Any]:
        _, mean, std = self._fitted()
        net = dict(self.cfg["net"])
        net.pop("weights", None)  # the trained weights are in the safetensors file
        return {"net": net, "bands": self.bands, "patch_size": self.patch_size,
                "mean": mean.tolist(), "std": std.tolist()}

    def card(self) -> dict[str, Any]:
        """The model card's normalisation (per-band mean, std), epochs run and best epoch."""
        _, mean, std = self._fitted()
        return {"normalisation": {"mean": mean.tolist(), "std": std.tolist()},
                "epochs": self.epochs, "best_epoch": self.best_epoch}

    @classmethod
    def load(cls, folder: Path, card: dict[str, Any]) -> TorchPatchClassifier:
        """A fitted classifier from a folder written by `save`; only networks in NETS are
        built, so the files cannot name code to run."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (WEIGHTS, CONFIG):
            if not (folder / name).is_file():
                raise InputError(f"{folder / name}: model file not found")
        try:
            conf = json.loads((folder / CONFIG).read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{folder / CONFIG}: not valid JSON: {exc}") from exc
        clf = cls({"net": conf["net"]}, conf["bands"], conf["patch_size"], card.get("seed", 0))
        net = build_net(dict(conf["net"]), len(clf.bands), clf.patch_size, clf.bands, trusted_only=True)
        try:
            net.load_state_dict(load_file(folder / WEIGHTS))
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise InputError(f"{folder / WEIGHTS}: cannot load weights: {exc}".splitlines()[0]) from exc
        clf.net = net.eval()
        clf.mean, clf.std = np.asarray(conf["mean"], np.float32), np.asarray(conf["std"], np.float32)
        return clf
