"""The package's import graph, read from its source (AST), never by importing it.

Used by tests/test_architecture.py: phase packages import only from packages listed
before them in `LAYERS`, no module imports itself through others (no cycles), imports sit
at module level except the heavy optional libraries in `LAZY`, and every DVC stage's deps
cover the project modules its command imports.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass
from pathlib import Path

#: The phase packages, lowest first: each imports only from itself and those before it.
#: cli.py and __main__.py (the entry point) sit above all of them.
LAYERS = ("core", "compute", "census", "imagery", "training", "comparison", "mapping", "validation", "indicators", "examples")
#: Libraries imported inside functions, for start-up time (and modules of this package
#: that import them at module level).
LAZY = ("torch", "torchvision", "lightning", "dask", "distributed", "mlflow", "geomad", "matplotlib",
        "sklearn", "skops", "hydra", "safetensors", "skimage", "statsmodels",
        "urbanmap.training.models.torch_model", "urbanmap.training.models.lenet",
        "urbanmap.training.models.resnet", "urbanmap.training.models.datamodule")


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen in `module` at `line`."""

    module: str  # the importing module, dotted
    target: str  # the imported module, dotted (a package's submodule when `from pkg import mod`)
    line: int
    lazy: bool  # inside a function


def _is_lazy(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in LAZY)


def modules(root: Path, package: str = "urbanmap") -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `root` (the package folder)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def imports(root: Path, package: str = "urbanmap") -> list[Import]:
    """Every import of a module of `package` found in its source under `root`."""
    known = modules(root, package)
    out = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                out.append(Import(name, target, node.lineno, id(node) in nested))
    return out


def layer(module: str, package: str = "urbanmap") -> int | None:
    """Index in LAYERS of the phase package holding `module`; len(LAYERS) for the entry
    point (cli, __main__); None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    if len(parts) == 1 or parts[1] not in LAYERS:
        return len(LAYERS)
    return LAYERS.index(parts[1])


def violations(root: Path, package: str = "urbanmap") -> list[str]:
    """Upward imports, cycles and function-level imports of light modules, one message each."""
    found = imports(root, package)
    problems = []
    graph: dict[str, set[str]] = {}
    for imp in found:
        inside = imp.target.split(".")[0] == package
        if imp.lazy and not _is_lazy(imp.target):
            problems.append(f"{imp.module}:{imp.line}: imports {imp.target} inside a function (only {', '.join(LAZY[:8])}, ... may be lazy)")
        if not inside:
            continue
        src, dst = layer(imp.module, package), layer(imp.target, package)
        if dst is not None and src is not None and dst > src:
            problems.append(f"{imp.module}:{imp.line}: imports {imp.target} from a later phase ({LAYERS[dst] if dst < len(LAYERS) else 'cli'})")
        if imp.target != imp.module and not imp.module.startswith(imp.target + "."):
            graph.setdefault(imp.module, set()).add(imp.target)
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        problems.append("import cycle: " + " -> ".join(exc.args[1]))
    return problems


def closure(root: Path, entry: str, package: str = "urbanmap") -> set[str]:
    """The modules of `package` that `entry` imports, directly or through others, lazily
    or not (a lazy import is still code the stage runs); `entry` included."""
    edges: dict[str, set[str]] = {}
    known = modules(root, package)
    for imp in imports(root, package):
        if imp.target in known:
            edges.setdefault(imp.module, set()).add(imp.target)
    seen, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in known)
        todo.extend(edges.get(name, ()))
    return seen


def uncovered(files: set[Path], deps: list[str], repo: Path) -> list[Path]:
    """The files that no dep (a file or a folder, relative to `repo`) covers."""
    roots = [(repo / d).resolve() for d in deps]
    return sorted(f for f in files if not any(f.resolve() == r or r in f.resolve().parents for r in roots))
