"""Extra Trees (or any scikit-learn classifier) on patch features, saved with skops.

The estimator is built with ``hydra.utils.instantiate`` from ``model.estimator``
(``_target_: sklearn.ensemble.ExtraTreesClassifier`` and its arguments); its
``random_state`` is the global seed. Features come from features.py, configured by
``model.features`` (groups, percentiles).

Saved as ``model.skops`` (skops.io: no pickle). Loading lists the file's types and
refuses any outside `TRUSTED`, so a crafted file cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanmap.errors import InputError
from urbanmap.features import compute_features

FILE = "model.skops"

#: Types a saved tree ensemble may hold beyond skops' defaults (numpy, builtins, sklearn
#: estimators it knows): anything else makes `load` refuse the file.
TRUSTED = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.ExtraTreeClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
    }
)


class ExtraTreesPatchClassifier:
    """A scikit-learn classifier on features of patches (see module docstring)."""

    def __init__(self, cfg: dict, bands: list[str], seed: int, estimator=None):
        self.cfg = cfg
        self.bands = list(bands)
        self.seed = seed
        feats = cfg.get("features") or {}
        self.groups = list(feats.get("groups", ["flat"]))
        self.percentiles = list(feats.get("percentiles", [10, 25, 50, 75, 90]))
        if estimator is None:
            from hydra.utils import instantiate

            estimator = instantiate(cfg["estimator"], random_state=seed)
        self.estimator = estimator
        self.feature_names: list[str] = []
        self.feature_groups: list[str] = []

    def features(self, patches: np.ndarray, context: str = "features"):
        return compute_features(patches, self.bands, self.groups, self.percentiles, context)

    def fit(self, patches: np.ndarray, y: np.ndarray) -> "ExtraTreesPatchClassifier":
        f = self.features(patches, "patches")
        self.feature_names, self.feature_groups = f.names, f.groups
        self.estimator.fit(f.X, np.asarray(y, np.uint8))
        return self

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        proba = self.estimator.predict_proba(self.features(patches).X)
        return proba[:, list(self.estimator.classes_).index(1)].astype(np.float64)

    def importances(self) -> tuple[list[str], list[str], np.ndarray] | None:
        """(feature names, feature groups, impurity importances) of a fitted model."""
        values = getattr(self.estimator, "feature_importances_", None)
        if values is None:
            return None
        return self.feature_names, self.feature_groups, np.asarray(values, np.float64)

    def save(self, folder: Path) -> list[str]:
        import skops.io as sio

        sio.dump(self.estimator, Path(folder) / FILE)
        return [FILE]

    def card(self) -> dict:
        return {
            "features": {"groups": self.groups, "percentiles": self.percentiles, "n_features": len(self.feature_names)},
            "feature_groups": sorted(set(self.feature_groups), key=self.feature_groups.index),
        }

    @classmethod
    def load(cls, folder: Path, card: dict) -> "ExtraTreesPatchClassifier":
        import skops.io as sio

        path = Path(folder) / FILE
        if not path.is_file():
            raise InputError(f"{path}: model file not found")
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:  # skops raises several types on a corrupt file
            raise InputError(f"{path}: not a skops file: {exc}".splitlines()[0]) from exc
        unknown = sorted(set(untrusted) - TRUSTED)
        if unknown:
            raise InputError(f"{path}: refusing to load untrusted type(s) {', '.join(unknown)}")
        estimator = sio.load(path, trusted=list(untrusted))
        cfg = {"features": card.get("features", {}), "estimator": None}
        clf = cls(cfg, card["bands"], card.get("seed", 0), estimator=estimator)
        p = int(card["patch_size"])
        names = clf.features(np.zeros((1, len(clf.bands), p, p), np.float32))  # names only
        clf.feature_names, clf.feature_groups = names.names, names.groups
        return clf
