"""Extra Trees (or any scikit-learn classifier) on patch features, saved with skops.

The estimator is built with ``hydra.utils.instantiate`` from ``model.estimator``
(``_target_: sklearn.ensemble.ExtraTreesClassifier`` and its arguments); its
``random_state`` is the global seed. Features come from features.py, configured by
``model.features`` (groups, percentiles).

Saved as ``model.skops`` (skops.io: no pickle). Loading lists the file's types and
refuses any outside `TRUSTED`, so a crafted file cannot run code.

skops.io is imported through `skops_io`, which keeps it from importing torch (see there).
"""

from __future__ import annotations

import importlib
import importlib.abc
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from urbanmap.core.errors import InputError
from urbanmap.training.features import Features, compute_features

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
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)


#: scikit-learn's vendored array-API wrappers of optional array libraries: importing one
#: imports its library (torch: about 3 s and 300 MB; dask.array), and nothing here uses them.
_ARRAY_API_WRAPPERS = tuple(f"sklearn.externals.array_api_compat.{lib}" for lib in ("torch", "cupy", "dask"))


class _SkipArrayApiWrappers(importlib.abc.MetaPathFinder):
    """Import finder that refuses `_ARRAY_API_WRAPPERS` (and their submodules)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        """Refuse the wrappers (ModuleNotFoundError); leave every other module to the next finder."""
        if any(name == w or name.startswith(w + ".") for w in _ARRAY_API_WRAPPERS):
            raise ModuleNotFoundError(f"{name}: not imported while skops lists scikit-learn's estimators", name=name)
        return None


def skops_io() -> ModuleType:
    """The `skops.io` module, imported without torch.

    skops.io builds its default list of trusted types when imported, with
    `sklearn.utils.all_estimators()`, which walks every package of scikit-learn with
    `pkgutil.walk_packages`. To descend into a package the walk imports it, even the
    `sklearn.externals` it then skips, so it imports the vendored array-API wrapper
    `sklearn.externals.array_api_compat.torch`, which imports torch (and the dask one,
    dask.array): 2.5 to 3 s of a 4 to 5 s import, in every process that loads a model
    (each Dask worker too). No setting of scikit-learn or skops turns this off, so the
    wrappers are refused for the duration of the import: `walk_packages` ignores a
    package that raises ImportError, the estimators (which `all_estimators` never takes
    from `externals`) and hence skops' trusted types are the same, and neither torch
    nor the wrappers are left half-imported (a later import of them works as usual).
    Refusing torch itself (``sys.modules["torch"] = None``) would not do: SciPy's
    array-API helpers look torch up in sys.modules and fail on None.
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    finder = _SkipArrayApiWrappers()
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("skops.io")
    finally:
        sys.meta_path.remove(finder)


def build_estimator(cfg: dict[str, Any], seed: int) -> Any:
    """The scikit-learn estimator of a model config: ``estimator`` instantiated with
    ``random_state=seed``, behind a StandardScaler when ``standardise`` is true (for
    linear models, whose penalty and solver assume features on one scale)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from sklearn.utils._param_validation import InvalidParameterError

    target = (cfg.get("estimator") or {}).get("_target_")
    try:
        estimator = instantiate(cfg["estimator"], random_state=seed)
    except InstantiationException as exc:
        reason = str(exc).replace("\n", " ").split(", set env var HYDRA_FULL_ERROR")[0].strip()
        raise InputError(f"model.estimator: cannot build {target}: {reason}") from None
    try:
        # scikit-learn checks its parameters only in fit; this is the same check
        # (a private method, stable since 1.2), made before any fitting starts
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise InputError(f"model.estimator ({target}): {exc}".splitlines()[0]) from None
    except AttributeError:  # an estimator without scikit-learn's parameter constraints
        pass
    if cfg.get("standardise"):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        estimator = make_pipeline(StandardScaler(), estimator)
    return estimator


class ExtraTreesPatchClassifier:
    """A scikit-learn classifier on features of patches (see module docstring)."""

    def __init__(self, cfg: dict[str, Any], bands: Sequence[str], seed: int, estimator: Any = None):
        self.cfg = cfg
        self.bands = list(bands)
        self.seed = seed
        feats = cfg.get("features") or {}
        self.groups = list(feats.get("groups", ["flat"]))
        self.percentiles = list(feats.get("percentiles", [10, 25, 50, 75, 90]))
        if estimator is None:
            estimator = build_estimator(cfg, seed)
        self.estimator = estimator
        self.feature_names: list[str] = []
        self.feature_groups: list[str] = []

    def features(self, patches: np.ndarray, context: str = "features") -> Features:
        """The configured features of (n, b, p, p) patches (features.compute_features)."""
        return compute_features(patches, self.bands, self.groups, self.percentiles, context)

    def fit(self, patches: np.ndarray, y: np.ndarray) -> ExtraTreesPatchClassifier:
        """Fit the estimator on the features of (n, b, p, p) patches and (n,) 0/1 labels."""
        f = self.features(patches, "patches")
        self.feature_names, self.feature_groups = f.names, f.groups
        self.estimator.fit(f.X, np.asarray(y, np.uint8))
        return self

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        """(n,) float64 probability of urban (class 1) of (n, b, p, p) patches."""
        proba = self.estimator.predict_proba(self.features(patches).X)
        return proba[:, list(self.estimator.classes_).index(1)].astype(np.float64)

    def importances(self) -> tuple[list[str], list[str], np.ndarray] | None:
        """(feature names, feature groups, impurity importances) of a fitted model."""
        values = getattr(self.estimator, "feature_importances_", None)
        if values is None:
            return None
        return self.feature_names, self.feature_groups, np.asarray(values, np.float64)

    def save(self, folder: Path) -> list[str]:
        """Write the estimator as model.skops into `folder`; return its name."""
        sio = skops_io()
        path = Path(folder) / FILE
        sio.dump(self.estimator, path)
        canonicalise_skops(path)
        return [FILE]

    def card(self) -> dict[str, Any]:
        """The model card's features (groups, percentiles, count) and feature groups."""
        return {
            "features": {"groups": self.groups, "percentiles": self.percentiles, "n_features": len(self.feature_names)},
            "feature_groups": sorted(set(self.feature_groups), key=self.feature_groups.index),
        }

    @classmethod
    def load(cls, folder: Path, card: dict[str, Any]) -> ExtraTreesPatchClassifier:
        """A fitted classifier from `folder`/model.skops, refusing types outside TRUSTED."""
        sio = skops_io()
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
        try:
            estimator = sio.load(path, trusted=list(untrusted))
        except Exception as exc:  # e.g. numpy refusing an object array (it would unpickle)
            raise InputError(f"{path}: cannot load the model: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        cfg = {"features": card.get("features", {}), "estimator": None}
        clf = cls(cfg, card["bands"], card.get("seed", 0), estimator=estimator)
        p = int(card["patch_size"])
        names = clf.features(np.zeros((1, len(clf.bands), p, p), np.float32))  # names only
        clf.feature_names, clf.feature_groups = names.names, names.groups
        expected = getattr(estimator, "n_features_in_", len(names.names))
        if expected != len(names.names):
            raise InputError(
                f"{path}: the model takes {expected:,} features, but its card's features ({', '.join(clf.groups)} of "
                f"{len(clf.bands)} bands, {p} x {p} px) make {len(names.names):,}: the model file and its card "
                f"come from different runs; run train again"
            )
        return clf


#: The zip timestamp of every member of a canonical skops file (the earliest a zip holds).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKOPS_IDS = re.compile(r'("__id__": )(\d+)|("file": ")(\d+)(\.npy")')


def canonicalise_skops(path: Path) -> None:
    """Rewrite the skops archive at `path` so that the same estimator gives the same bytes.

    skops names each array member and memo entry by the Python object's id (`id(obj)`,
    e.g. `140260806836560.npy`, different in every process) and stamps the zip with the
    time, so two fits of the same patches, config and seed saved different bytes and DVC
    saw a new model after every retrain. Here every such id becomes its rank of first
    appearance in schema.json (the tree's own order), in `"__id__"` and in the `.npy`
    member names alike, so references stay consistent and skops loads the file as
    before; members are written schema.json first, then by name, with a fixed timestamp
    and permissions. skops has no option for this; it is the archive's byte layout only.
    """
    with zipfile.ZipFile(path) as src:
        members = {info.filename: (info, src.read(info)) for info in src.infolist()}
    schema = members["schema.json"][1].decode("utf-8")
    rank: dict[str, str] = {}
    for match in _SKOPS_IDS.finditer(schema):
        rank.setdefault(match.group(2) or match.group(4), str(len(rank)))

    def renamed(match: re.Match[str]) -> str:
        if match.group(2):
            return f"{match.group(1)}{rank[match.group(2)]}"
        return f"{match.group(3)}{rank[match.group(4)]}{match.group(5)}"

    out: dict[str, tuple[zipfile.ZipInfo, bytes]] = {"schema.json": (members["schema.json"][0], _SKOPS_IDS.sub(renamed, schema).encode("utf-8"))}
    for name, (info, data) in members.items():
        if name != "schema.json":
            stem = name.removesuffix(".npy")
            out[f"{rank.get(stem, stem)}.npy" if name.endswith(".npy") else name] = (info, data)
    order = ["schema.json", *sorted(n for n in out if n != "schema.json")]
    tmp = path.with_name(path.name + ".canonical")
    with zipfile.ZipFile(tmp, "w") as dst:
        for name in order:
            info, data = out[name]
            fixed = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            fixed.compress_type = info.compress_type
            fixed.external_attr = 0o644 << 16
            fixed.create_system = 3
            dst.writestr(fixed, data)
    tmp.replace(path)
