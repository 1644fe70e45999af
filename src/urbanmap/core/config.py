"""Configuration: Hydra composition of `conf/` and Hydra-style overrides on params.yaml.

`dvc exp run` composes `conf/` into `params.yaml` (DVC's Hydra integration); every stage
then reads `params.yaml`. `urbanmap <stage> key=value ...` applies overrides on top of it:
a config group (`data=mexico`) swaps that group's node for the group file composed from
`conf/`; a dotted key (`labels.rule=population_density`) sets a value; `+key=value` adds
a key and `~key` removes one, as in Hydra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output
from urbanmap.core.periods import LEGACY

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"
CONFIG_NAME = "config"


def compose(conf_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `conf_dir/config.yaml` with Hydra and resolve it, as `dvc exp run` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except HydraException as exc:
        raise InputError(f"{conf_dir}: {exc}".splitlines()[0]) from exc
    OmegaConf.resolve(cfg)
    return cfg


def write_params(root: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Write `root/params.yaml` from the composed `root/conf`, byte for byte as
    `dvc exp run` writes it."""
    params = compose(Path(root) / CONF_DIR, overrides)
    out = Path(root) / PARAMS_FILE
    with atomic_output(out) as tmp:
        tmp.write_text(OmegaConf.to_yaml(params), encoding="utf-8")
    return out


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's parse of `overrides`; InputError naming the one it cannot parse, with a
    hint to quote its value (Hydra's grammar takes unquoted values of ASCII letters,
    digits and a few signs only: `data.name='méxico'`, in the shell "data.name='méxico'")."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except HydraException as exc:
            key, sep, value = text.partition("=")
            hint = (f"; quote the value: \"{key}='{value}'\"" if sep and value and not value.startswith(("'", '"', "["))
                    else "")
            reason = str(exc).splitlines()[0].removeprefix("LexerNoViableAltException: ")
            reason = "characters that need quotes" if reason == text else reason
            raise InputError(f"override {text!r} cannot be parsed ({reason}){hint}") from None
    return parsed


def load(root: str | Path = ".", overrides: Sequence[str] = ()) -> DictConfig:
    """`root/params.yaml` with Hydra-style `overrides` applied (see module docstring)."""
    root = Path(root)
    params_path = root / PARAMS_FILE
    if not params_path.is_file():
        raise InputError(f"{params_path}: not found; run urbanmap from the project root")
    try:
        loaded = OmegaConf.create(yaml.safe_load(params_path.read_text()))
    except yaml.YAMLError as exc:
        raise InputError(f"{params_path}: not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(loaded, DictConfig):
        raise InputError(f"{params_path}: expected a mapping of config keys, got a list")
    cfg = loaded
    parsed = parse_overrides(overrides)

    conf_dir = root / CONF_DIR
    groups = [o for o in parsed if (conf_dir / o.key_or_group).is_dir()]
    for o in groups:
        option = o.value()
        if not (conf_dir / o.key_or_group / f"{option}.yaml").is_file():
            choices = sorted(p.stem for p in (conf_dir / o.key_or_group).glob("*.yaml"))
            raise InputError(
                f"{o.input_line}: no config {option!r} in {conf_dir / o.key_or_group} "
                f"(choose from {', '.join(choices)})"
            )
    if groups:
        composed = compose(conf_dir, [str(o.input_line) for o in groups])
        for o in groups:
            cfg[str(o.key_or_group)] = composed[str(o.key_or_group)]

    added: set[str] = set()
    for o in parsed:
        if o in groups:
            continue
        key = o.key_or_group
        current = OmegaConf.select(cfg, key, default=_MISSING)
        exists = current is not _MISSING
        if o.is_delete():
            if not exists:
                raise InputError(f"{o.input_line}: no key {key!r} in {params_path}")
            if key not in added:
                raise InputError(f"{o.input_line}: the stages read {key}; set it (or {key}=null) instead of deleting it")
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            del node[leaf]
            continue
        if not exists and (key == "years" or key.startswith("years.")):
            raise InputError(f"{o.input_line}: {LEGACY}")
        if not exists and key == "year":
            raise InputError(f"{o.input_line}: year= is replaced by period= (a year 2019, a semester 2019H1, ...)")
        if not exists and not o.is_add():
            raise InputError(f"{o.input_line}: no key {key!r} in {params_path} (use +{key}=... to add one)")
        if exists:
            check_type(str(o.input_line), key, OmegaConf.to_object(current) if OmegaConf.is_config(current) else current, o.value())
        else:
            added.add(key)
        OmegaConf.update(cfg, key, o.value(), merge=False, force_add=True)
    return cfg


def _kind(value: Any) -> str | None:
    """The kind of a config value an override must keep: None when any value will do."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "a text"


def _fits(kind: str | None, value: Any) -> bool:
    """Whether `value` is of `kind` (_kind); numbers fit texts, whole numbers fit numbers,
    and 2.0 fits a whole number."""
    if kind is None or value is None:
        return True
    fits = {
        "true or false": lambda v: isinstance(v, bool),
        "a whole number": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
        "a number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "a list": lambda v: isinstance(v, list),
        "a mapping": lambda v: isinstance(v, dict),
        "a text": lambda v: isinstance(v, str | int | float) and not isinstance(v, bool),
    }
    return fits[kind](value)


_PLURAL = {"true or false": "true / false values", "a whole number": "whole numbers", "a number": "numbers",
           "a list": "lists", "a mapping": "mappings", "a text": "texts"}


def check_type(override: str, key: str, current: Any, value: Any) -> None:
    """InputError unless the override's `value` has the kind of the key's `current` value
    in params.yaml (a number stays a number, a list of whole numbers stays one, ...).

    The config's values are its schema: conf/ gives every key a value of the kind the
    stages read, so `cv.n_splits=abc`, `cv.n_splits=2.7` or `data.window=5` are refused
    here, naming the key, before any stage reads them. A key whose value is null takes
    anything (its stage checks it).
    """
    kind = _kind(current)
    if not _fits(kind, value):
        raise InputError(f"{override}: {key} takes {kind} (like {current!r}), got {value!r}")
    if kind == "a list" and current and isinstance(value, list):
        kinds = {_kind(v) for v in current}
        element = kinds.pop() if len(kinds) == 1 else None
        bad = [v for v in value if not _fits(element, v)]
        if bad and element is not None:
            raise InputError(f"{override}: {key} takes a list of {_PLURAL[element]} (like {current!r}), got {bad[0]!r}")


_MISSING = object()
