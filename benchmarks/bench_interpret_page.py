"""Benchmark: the interpreter's page of `urbanmap interpret serve` in a real browser, for a
sample of 500 cells.

    python benchmarks/bench_interpret_page.py [--loads 20] [--work /tmp/bench_interpret_page]

A 40 x 40-cell region (urbanmap.examples.tiny.write_validation_inputs) is written under
--work, its sample drawn with 250 cells per stratum (500 cells: `validation.min_per_stratum
=250`, the size the default region's target_se gives) with its chips of both periods, and
the app is served in a subprocess, as interpreters use it. Headless Chromium (Debian's
/usr/bin/chromium, Selenium) then opens, one after another, --loads different cells of
the sample (all given to the interpreter: validation.app.batch=500), after 2 loads not
counted; each chip sheet is new to the browser, as it is for an interpreter. Measured in
the same run:

  page      the interpreter's page of a cell: the Navigation Timing API's loadEventEnd
            (the HTML, the CSS, the scripts and the chip sheet all loaded and laid out),
            and the wall time of WebDriver's get() around it;
  render    the server's share: the same page rendered through Flask's test client
            (database queries and the template, no network, no browser);
  baseline  the chip sheet alone opened as the document (/chip/<cell>): the least any
            page that shows the chips costs.

Printed: the median and the 90th percentile of each, and page / baseline. Target: the
page's median under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from urbanmap.examples.round_trip import wait_for  # starts the server the same way

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["data.name=bench", "validation.target_se=0.1", "validation.min_per_stratum=250", "validation.app.batch=500"]


def browser():
    """Headless Chromium (Debian's), Selenium Manager offline."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(ms: list[float]) -> tuple[float, float]:
    """(median, 90th percentile) in ms."""
    return statistics.median(ms), statistics.quantiles(ms, n=10)[-1] if len(ms) > 1 else ms[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--work", default="/tmp/bench_interpret_page")
    args = parser.parse_args()

    from urbanmap.cli import main as cli
    from urbanmap.core import config
    from urbanmap.examples.tiny import write_validation_inputs
    from urbanmap.validation.app import command

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    over = [f"out_dir={work}", *OVERRIDES]
    os.chdir(ROOT)
    write_validation_inputs(work, 40, "bench")
    start = time.perf_counter()
    assert cli(["validate", "sample", *over]) == 0
    print(f"sample and chips: {time.perf_counter() - start:.1f} s")

    # the server's share, in-process
    app, ctx, _ = command.prepare(config.load(ROOT, over), "127.0.0.1")
    client = app.test_client()
    assert len(ctx.sample_cells) == 500, len(ctx.sample_cells)
    client.get("/?interpreter=bench")  # gives the interpreter the whole sample
    cells = ctx.sample_cells[2: 2 + args.loads]
    render = []
    for cell in cells:
        t = time.perf_counter()
        assert client.get(f"/?interpreter=bench&cell={cell}").status_code == 200
        render.append(1000 * (time.perf_counter() - t))

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "urbanmap", "interpret", "serve", "--port", str(port), *over],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    driver = None
    try:
        wait_for(port, proc)
        base = f"http://127.0.0.1:{port}"
        driver = browser()
        timing = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"
        for cell in ctx.sample_cells[:2]:  # warm-up: the browser's first pages, the CSS and scripts cached
            driver.get(f"{base}/?interpreter=bench&cell={cell}")
        page, wall, base_ms = [], [], []
        for k, cell in enumerate(cells):
            t = time.perf_counter()
            driver.get(f"{base}/?interpreter=bench&cell={cell}")
            wall.append(1000 * (time.perf_counter() - t))
            page.append(float(driver.execute_script(timing)))
            assert driver.find_element("id", "cell-id").text == cell
            # the baseline: another cell's chip sheet alone, also new to the browser
            driver.get(f"{base}/chip/{ctx.sample_cells[-1 - k]}")
            base_ms.append(float(driver.execute_script(timing)))
    finally:
        if driver is not None:
            driver.quit()
        proc.kill()
        proc.wait()

    print(f"\ninterpreter's page, sample of {len(ctx.sample_cells)} cells, {len(cells)} loads of different cells "
          "(median / 90th percentile, ms):")
    for name, values in (("page (load event)", page), ("page (WebDriver get)", wall), ("render (server only)", render),
                         ("baseline: chip sheet alone", base_ms)):
        median, p90 = summary(values)
        print(f"  {name:<28}{median:>8.1f}{p90:>8.1f}")
    ratio = statistics.median(page) / statistics.median(base_ms)
    verdict = "under" if statistics.median(page) < 300 else "OVER"
    print(f"page / baseline: {ratio:.2f}; target: median page < 300 ms: {verdict}")


if __name__ == "__main__":
    main()
