"""Running the CLI from a test: in-process with the exit status, stderr and files checked,
or in a fresh interpreter to see which heavy libraries a command imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers.project import REPO
from urbanmap.cli import main


def heavy_imports_after(args: list[str]) -> tuple[int, list[str]]:
    """Run `urbanmap <args>` in a fresh interpreter; return its exit status and the
    heavy libraries (torch, lightning, torchvision, mlflow) it imported."""
    code = (
        "import sys; from urbanmap.cli import main; "
        f"rc = main({args!r}); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'torchvision', 'mlflow')); "
        "print(rc, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    rc, heavy = result.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(rc), ast.literal_eval(heavy)


def expect_error(capsys, folder: Path, args: list[str], *fragments: str) -> str:
    """Run the CLI in-process; assert exit status 2, one stderr line holding every
    fragment, and no file written under `folder` (no output, no temporary left)."""
    before = {p for p in folder.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert "np.str_(" not in err and "np.float64(" not in err, err  # values as a user writes them
    written = {p for p in folder.rglob("*") if p.is_file()} - before
    assert not written, written
    return err
