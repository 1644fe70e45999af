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

import yaml
from omegaconf import DictConfig, OmegaConf

from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output

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


def load(root: str | Path = ".", overrides: Sequence[str] = ()) -> DictConfig:
    """`root/params.yaml` with Hydra-style `overrides` applied (see module docstring)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

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
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise InputError(f"overrides: {exc}".splitlines()[0]) from exc

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

    for o in parsed:
        if o in groups:
            continue
        key = o.key_or_group
        exists = OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING
        if o.is_delete():
            if not exists:
                raise InputError(f"{o.input_line}: no key {key!r} in {params_path}")
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            del node[leaf]
            continue
        if not exists and not o.is_add():
            raise InputError(f"{o.input_line}: no key {key!r} in {params_path} (use +{key}=... to add one)")
        OmegaConf.update(cfg, key, o.value(), merge=False, force_add=True)
    return cfg


_MISSING = object()
