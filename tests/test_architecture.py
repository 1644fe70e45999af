"""The layout: phase packages import one way, without cycles, at module level (heavy
libraries excepted), and each DVC stage's code deps cover what its command imports."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from helpers import architecture
from helpers.project import REPO
from urbanmap.cli import STAGES

PACKAGE = REPO / "src" / "urbanmap"


def _stage_entries() -> dict[str, tuple[str, list[str]]]:
    """dvc.yaml stage -> (the module its `urbanmap ...` command runs, its literal deps)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        words = stage["cmd"].split()
        assert words[0] == "urbanmap", f"{name}: {stage['cmd']}"
        module = "urbanmap.validation.validate" if words[1] == "validate" else STAGES[words[1]][0].partition(":")[0]
        out[name] = (module, [d for d in stage.get("deps", []) if "${" not in d])
    return out


def _model_targets() -> set[str]:
    """Modules that the model configs name in `_target_` (imported by Hydra, not by a
    statement the AST shows)."""
    found = set()
    for path in (REPO / "conf" / "model").glob("*.yaml"):
        net = (yaml.safe_load(path.read_text()) or {}).get("net") or {}
        if "_target_" in net:
            found.add(net["_target_"].rpartition(".")[0])
    return found


def stage_gaps(root: Path, entries: dict[str, tuple[str, list[str]]], repo: Path) -> dict[str, list[Path]]:
    """Stage -> project files its command imports that its deps do not cover."""
    files = architecture.modules(root)
    gaps = {}
    for stage, (entry, deps) in entries.items():
        names = architecture.closure(root, entry)
        if "urbanmap.training.models" in names:  # the model zoo: Hydra imports the configured network
            for target in _model_targets():
                names |= architecture.closure(root, target)
        missing = architecture.uncovered({files[n] for n in names if n in files and n.count(".") >= 1}, deps, repo)
        missing = [f for f in missing if f.name != "__init__.py" or f.stat().st_size]
        if missing:
            gaps[stage] = missing
    return gaps


def test_phase_packages_import_one_way_without_cycles():
    assert architecture.violations(PACKAGE) == []


def test_a_planted_upward_import_and_cycle_are_caught(tmp_path):
    root = tmp_path / "urbanmap"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    lattice = root / "core" / "lattice.py"
    lattice.write_text(lattice.read_text() + "\nfrom urbanmap.mapping import change  # planted\n")
    problems = architecture.violations(root)
    assert any("urbanmap.core.lattice" in p and "later phase (mapping)" in p for p in problems), problems
    assert any(p.startswith("import cycle:") for p in problems), problems


def test_a_planted_function_level_import_is_caught(tmp_path):
    root = tmp_path / "urbanmap"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    io = root / "core" / "io.py"
    io.write_text(io.read_text() + "\n\ndef planted():\n    import json\n    return json\n")
    assert any("imports json inside a function" in p for p in architecture.violations(root))


def test_every_stage_depends_on_the_code_it_imports():
    entries = _stage_entries()
    assert set(entries) >= {"grid", "labels", "synth", "mosaic", "patches", "train", "evaluate", "predict", "change",
                            "validate_sample", "validate_interpret", "validate_estimate", "sdg"}
    assert stage_gaps(PACKAGE, entries, REPO) == {}


def test_a_missing_stage_dep_is_caught():
    entries = _stage_entries()
    module, deps = entries["predict"]
    entries = {"predict": (module, [d for d in deps if d != "src/urbanmap/mapping"])}
    gaps = stage_gaps(PACKAGE, entries, REPO)
    assert PACKAGE / "mapping" / "predict.py" in gaps["predict"]
    module, deps = _stage_entries()["train"]
    gaps = stage_gaps(PACKAGE, {"train": (module, [d for d in deps if not d.endswith("landsat.py")])}, REPO)
    assert gaps["train"] == [PACKAGE / "imagery" / "landsat.py"]  # reached only through the resnet18 config
