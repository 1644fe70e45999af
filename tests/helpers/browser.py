"""The browser of the web app's tests: Debian's Chromium driven by Selenium, headless.

Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver (apt: chromium,
chromium-driver; `.ci/run` installs them), and Selenium Manager is kept offline
(SE_OFFLINE), so nothing is ever downloaded by the tests. Without them the tests fail
(CI must run them); URBANMAP_SKIP_BROWSER=1 skips them on a machine that cannot have them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium (Selenium WebDriver); fails when Chromium is not installed."""
    if os.environ.get("URBANMAP_SKIP_BROWSER") == "1":
        pytest.skip("URBANMAP_SKIP_BROWSER=1: browser tests skipped")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver "
                    "(or URBANMAP_SKIP_BROWSER=1 to skip the browser tests)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    return driver


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(cwd: Path, overrides: list[str], port: int, log: Path, *extra: str) -> subprocess.Popen:
    """`urbanmap interpret serve --port <port> <overrides>` in a subprocess; returns once it
    answers (fails with its log if it does not within 60 s)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "urbanmap", "interpret", "serve", "--port", str(port), *extra,
                                 *overrides], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server stopped (exit {proc.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the server did not answer within 60 s:\n{log.read_text()}")
