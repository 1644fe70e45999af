"""Faults of the machine and of the user's hand: an out_dir that is a file or read-only,
a full disk, Ctrl-C. One line, the right exit status, nothing half-written."""

import signal
import subprocess
import sys
import time

import pytest

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import io

pytestmark = pytest.mark.slow  # subprocesses and tmpfs mounts


def _interruptible():
    """In the child: SIGINT back to its default, so that Python turns it into
    KeyboardInterrupt even when pytest runs in the background of a shell (which starts
    background jobs with SIGINT ignored, and an ignored signal is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def urbanmap(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "urbanmap.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible, **kwargs)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only) -> a fresh tmpfs folder; skipped where mounting is not permitted."""
    mounted = []

    def mount(size: str = "1m", read_only: bool = False):
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True).returncode:
            pytest.skip("mounting a tmpfs is not permitted here")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_an_out_dir_that_is_a_file(in_repo, tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    assert main(["grid", f"out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"urbanmap grid: error: {tmp_path / 'out' / 'valle_de_mexico'}: cannot write outputs here: {tmp_path / 'out'} is a file, not a folder"


def test_a_read_only_out_dir_fails_before_the_work(in_repo, tmpfs, capsys):
    start = time.monotonic()
    assert main(["labels", f"out_dir={tmpfs(read_only=True)}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("cannot write outputs here: read-only file system") and len(err.splitlines()) == 1
    assert time.monotonic() - start < 5  # the check comes before the census is read


def test_a_full_disk_is_named_and_leaves_nothing_half_written(in_repo, tmpfs, capsys):
    out = tmpfs("64k")  # grid.parquet of the default region needs about 200 KB
    assert main(["grid", f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write: no space left on device" in err and len(err.splitlines()) == 1, err
    assert list((out / "valle_de_mexico").iterdir()) == []


def test_a_write_error_without_a_file_name_names_the_output(tmp_path):
    out = tmp_path / "predictions_2019.png"
    with pytest.raises(OSError) as caught, io.atomic_output(out):
        raise OSError(28, "No space left on device")  # as PIL raises it, without a file name
    assert io.describe_os_error(caught.value) == f"{out}: cannot write: no space left on device"
    assert list(tmp_path.iterdir()) == []


def test_describe_os_error_reads_gdals_short_write_as_a_full_disk():
    assert io.describe_os_error(OSError("/x/m.tif: 3201660 requested and 1751008 written")) == \
        "/x/m.tif: cannot write: no space left on device"
    assert io.describe_os_error(OSError(28, "No space left on device", "/x/a.parquet")) == \
        "/x/a.parquet: cannot write: no space left on device"
    assert io.describe_os_error(OSError(111, "Connection refused")) is None  # not a file fault


def test_ctrl_c_is_one_line_exit_130_and_outputs_stay(tmp_path):
    region = tmp_path / "valle_de_mexico"
    assert subprocess.run([sys.executable, "-m", "urbanmap.cli", "grid", f"out_dir={tmp_path}"], cwd=REPO,
                          capture_output=True).returncode == 0
    (region / "scenes").mkdir()
    (region / "scenes" / "2010").mkdir()
    (region / "scenes" / "2010" / "catalog.json").write_text("an earlier run's catalog")
    proc = urbanmap("synth", "period=2010", f"out_dir={tmp_path}")
    # wait until the scenes are being generated (their temporary folder is there), however
    # long the imports take on a busy machine; the stage takes half a minute or more
    deadline = time.monotonic() + 120
    while not list((region / "scenes").glob(".2010.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "urbanmap synth: interrupted; outputs left as they were"
    assert [p.name for p in (region / "scenes").iterdir()] == ["2010"]  # no temporary left
    assert [p.name for p in (region / "scenes" / "2010").iterdir()] == ["catalog.json"]
    assert not (region / "truth").exists() or not list((region / "truth").iterdir())
