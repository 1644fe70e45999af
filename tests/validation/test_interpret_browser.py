"""The interpreters' web app in a real browser (Debian's Chromium, driven by Selenium), the
server a subprocess of `urbanmap interpret serve`: labelling by keyboard and by mouse,
SIGKILL of the server and a restart, two interpreters at once (agreement and kappa as
computed by hand, a wrong gold answer, adjudication), export into `validate estimate`, the
map page, a hundred cells by keyboard, and the token off loopback. Each page is saved as
a PNG under the test's temporary folder (screens/)."""

from __future__ import annotations

import html
import re
import shutil
import sqlite3
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from helpers.browser import chrome, free_port, start_server
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.validation import estimate
from urbanmap.validation.settings import ValidationSettings

pytestmark = pytest.mark.slow

KEYS = {"urban": "u", "non_urban": "n", "cannot_tell": "c"}


@pytest.fixture
def region(sampled, tmp_path, in_repo):
    """A copy of the sampled region for one test: (overrides with the gold cells, truth
    by cell, sample, gold by cell, screenshots folder)."""
    root, over, cells, sample, gold = sampled
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    over = [o.replace(str(root), str(tmp_path)) for o in over] + [f"validation.app.gold={tmp_path / 'gold.csv'}"]
    screens = tmp_path / "screens"
    screens.mkdir()
    return over, dict(zip(cells["cell_id"], cells["truth"])), sample, gold, screens


@pytest.fixture
def servers(tmp_path):
    """Start servers (start(overrides, *options) -> (process, base URL)); all are killed at the end."""
    started = []

    def start(over, *extra, port=None):
        port = port or free_port()
        proc = start_server(REPO, over, port, tmp_path / "server.log", *extra)
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def browsers():
    """Open browsers (open() -> driver); all are closed at the end."""
    opened = []

    def open_one():
        driver = chrome()
        driver.implicitly_wait(5)
        opened.append(driver)
        return driver

    yield open_one
    for driver in opened:
        driver.quit()


# --- driving the pages -----------------------------------------------------------------------


def keys(driver, *sequence):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*sequence).perform()


def wait_new_page(driver, old, timeout=15):
    """Wait until `old` (the last page's html element) is gone and the next page has
    loaded. A query that lands between two pages can fail in the browser (no document to
    run it in): the wait asks again rather than failing."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(old))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def shown(driver):
    """The cell the interpreter page shows, or None (another page)."""
    found = driver.find_elements("id", "cell-id")
    return found[0].text if found else None


def progress(driver):
    return driver.find_element("id", "progress-text").text


def by_keyboard(driver, answer, confidence, comment=None):
    """Answer the page's cell with the keyboard only, and wait for the next page."""
    from selenium.webdriver.common.keys import Keys

    old = driver.find_element("tag name", "html")
    keys(driver, KEYS[answer], str(confidence))
    if comment:
        keys(driver, "m", comment, Keys.ESCAPE)
    keys(driver, Keys.ENTER)
    wait_new_page(driver, old)


def by_mouse(driver, answer, confidence):
    """Answer the page's cell with the mouse only (the labels, then Submit)."""
    old = driver.find_element("tag name", "html")
    driver.find_element("xpath", f"//input[@id='answer-{answer}']/parent::label").click()
    driver.find_element("xpath", f"//input[@id='confidence-{confidence}']/parent::label").click()
    driver.find_element("id", "submit").click()
    wait_new_page(driver, old)


def screenshot(driver, folder, name):
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path


def db_answers(over):
    db = ValidationSettings.from_config(config.load(REPO, over)).database
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("SELECT interpreter, cell_id, answer, confidence, comment FROM answers ORDER BY id").fetchall()


# --- the tests -------------------------------------------------------------------------------


def test_keyboard_and_mouse_then_sigkill_loses_nothing_and_the_interpreter_resumes(region, servers, browsers):
    over, truth, sample, gold, screens = region
    proc, base = servers(over)
    port = base.rsplit(":", 1)[1]
    driver = browsers()
    driver.get(base + "/")
    screenshot(driver, screens, "home")
    driver.find_element("id", "interpreter").send_keys("ana\n")
    assert shown(driver) is not None
    screenshot(driver, screens, "interpret")
    answer = lambda c: gold.get(c) or truth[c]

    given = []
    for k in range(3):  # the keyboard: u / n, 3, a comment on the first, Enter
        cell = shown(driver)
        by_keyboard(driver, answer(cell), 3, "roofs and roads" if k == 0 else None)
        given.append(("ana", cell, answer(cell), 3, "roofs and roads" if k == 0 else ""))
    for _ in range(2):  # the mouse
        cell = shown(driver)
        by_mouse(driver, answer(cell), 2)
        given.append(("ana", cell, answer(cell), 2, ""))
    # zoom the four views together from the keyboard
    keys(driver, "+", "+")
    assert driver.execute_script("return window.urbanmapViewer.state.z") == pytest.approx(2.25)
    transforms = driver.execute_script("return Array.from(document.querySelectorAll('.frame img')).map(i => i.style.transform)")
    assert len(transforms) == 4 and all("scale(2.25)" in t for t in transforms)
    screenshot(driver, screens, "interpret_zoomed")
    skipped = shown(driver)
    old = driver.find_element("tag name", "html")
    keys(driver, "s")
    wait_new_page(driver, old)
    pending = shown(driver)
    assert pending not in (skipped, *[g[1] for g in given])
    assert "5 / " in progress(driver) and "1 skipped" in progress(driver)

    proc.kill()  # SIGKILL: no clean shutdown, no checkpoint
    proc.wait()
    assert db_answers(over) == given  # every submitted answer is there

    servers(over, port=int(port))  # restarted
    driver.get(base + "/?interpreter=ana")
    assert shown(driver) == pending  # resumes at the first unanswered cell
    assert "5 / " in progress(driver) and "1 skipped" in progress(driver)
    screenshot(driver, screens, "interpret_resumed")
    old = driver.find_element("tag name", "html")
    driver.find_element("link text", skipped).click()  # skip and come back
    wait_new_page(driver, old)
    assert shown(driver) == skipped
    by_keyboard(driver, answer(skipped), 1)
    assert "0 skipped" not in progress(driver) and "skipped" not in progress(driver)
    assert db_answers(over)[-1] == ("ana", skipped, answer(skipped), 1, "")


def test_two_interpreters_agreement_kappa_gold_adjudication_and_export(region, servers, browsers, capsys):
    over, truth, sample, gold, screens = region
    over = [*over, "validation.app.double_share=1.0", "validation.app.batch=12"]
    _, base = servers(over)
    ana, ben = browsers(), browsers()
    ana.get(base + "/?interpreter=ana")
    ben.get(base + "/?interpreter=ben")
    first_ben = shown(ben)
    flips, cannot = {}, {}
    answers = {"ana": {}, "ben": {}}
    # Both work at once, one cell each in turn: ana answers what she sees, ben differs on
    # his 2nd and 5th cells, cannot tell his 8th, and answers his gold cell wrongly.
    for k in range(13):
        for name, driver in (("ana", ana), ("ben", ben)):
            cell = shown(driver)
            assert cell is not None, f"{name} ran out of cells after {k}"
            value = gold.get(cell) or truth[cell]
            if name == "ben":
                if cell in gold:
                    value = {"urban": "non_urban", "non_urban": "urban"}[value]
                elif k in (1, 4):
                    value = flips[cell] = {"urban": "non_urban", "non_urban": "urban"}[value]
                elif k == 7:
                    value = cannot[cell] = "cannot_tell"
            answers[name][cell] = value
            (by_keyboard if k % 2 else by_mouse)(driver, value, 3 if k % 3 else 2)
    assert first_ben in answers["ana"]
    assert progress(ana).startswith("13 / ") and progress(ben).startswith("13 / ")  # and a new batch each
    common = sorted(set(answers["ana"]) & set(answers["ben"]) - set(gold))
    assert len(common) == 12 and len(flips) == 2 and len(cannot) == 1
    assert set(answers["ana"]) & set(gold) and set(answers["ben"]) & set(gold)

    # agreement and kappa by hand: p_o = agreeing / n, p_e = Σ_k (n_ak / n)(n_bk / n)
    a = [answers["ana"][c] for c in common]
    b = [answers["ben"][c] for c in common]
    n = len(common)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(k) / n) * (b.count(k) / n) for k in ("urban", "non_urban", "cannot_tell"))
    kappa = (p_o - p_e) / (1 - p_e)
    assert p_o == 9 / 12 and kappa == pytest.approx(cohen_kappa_score(a, b))
    ana.get(base + "/qa")
    screenshot(ana, screens, "qa")
    row = ana.find_element("css selector", "tr[data-pair='ana|ben']")
    assert row.find_element("css selector", ".agreement").text == f"{100 * p_o:.1f}%"
    assert row.find_element("css selector", ".kappa").text == f"{kappa:.3f}"
    scores = {r.get_attribute("data-name"): r.find_element("css selector", ".gold-score").text
              for r in ana.find_elements("css selector", "#interpreters tbody tr")}
    assert scores == {"ana": "100.0%", "ben": "0.0%"}  # ben's wrong gold answer lowers his score

    # the adjudicator settles one disagreement on the QA page
    settle = sorted(flips)[0]
    row = ana.find_element("css selector", f"tr[data-cell='{settle}']")
    row.find_element("name", "adjudicator").send_keys("chief")
    from selenium.webdriver.support.ui import Select

    Select(row.find_element("name", "answer")).select_by_value(truth[settle])
    old = ana.find_element("tag name", "html")
    row.find_element("tag name", "button").click()
    wait_new_page(ana, old)
    assert ana.find_element("css selector", f"tr[data-cell='{settle}'] .settled").text.replace("-", "_") == truth[settle].replace("-", "_").replace("non_urban", "non_urban")
    screenshot(ana, screens, "qa_adjudicated")

    # the map, and a cell opened from it
    ana.get(base + "/map")
    screenshot(ana, screens, "map")
    rect = ana.find_element("css selector", f"rect[data-cell='{settle}']")
    assert "adjudicated" in rect.get_attribute("class")
    old = ana.find_element("tag name", "html")
    ana.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", rect)
    wait_new_page(ana, old)
    assert ana.find_element("id", "cell-id").text == settle
    table = ana.find_element("id", "answers").text
    assert "ana" in table and "ben" in table and "chief" in ana.page_source
    screenshot(ana, screens, "cell")
    ana.get(base + "/map?layer=change")
    screenshot(ana, screens, "map_change")

    # export -> validate interpret (human) -> validate estimate, against the answers directly
    assert main(["interpret", "export", *over]) == 0
    printed = capsys.readouterr().out
    assert f"kappa {kappa:.3f}" in printed
    assert main(["validate", "interpret", *over, "validation.interpreter=human"]) == 0
    assert main(["validate", "estimate", *over]) == 0
    cfg = config.load(REPO, over)
    got = pd.read_json(paths.validation_estimate(cfg), typ="series")
    final = {}
    for cell in common:
        x, y = answers["ana"][cell], answers["ben"][cell]
        value = truth[cell] if cell == settle else (x if x == y else None)
        if value in ("urban", "non_urban"):
            final[cell] = value
    assert len(final) == 12 - 2 - 1 + 1
    rows = sample.set_index("cell_id").loc[list(final)]
    strata = pd.read_csv(paths.validation_strata(cfg)).set_index("class")["area"]
    direct = estimate.stratified_estimates(rows["map_class"].to_numpy(), np.array(list(final.values())), strata,
                                           classes=["urban", "non_urban"])
    assert got["n"] == len(final)
    assert got["overall_accuracy"]["estimate"] == pytest.approx(direct["overall_accuracy"]["estimate"])
    assert got["area"]["urban"]["estimate"] == pytest.approx(direct["area"]["urban"]["estimate"])
    assert got["area"]["urban"]["ci95"] == pytest.approx(direct["area"]["urban"]["ci95"])


def test_a_hundred_cells_by_keyboard(region, servers, browsers, capsys):
    over, truth, sample, gold, screens = region
    over = [*over, "validation.app.batch=100", "validation.app.gold=null"]
    _, base = servers(over)
    driver = browsers()
    driver.get(base + "/?interpreter=kim")
    start = time.monotonic()
    for _ in range(100):
        cell = shown(driver)
        by_keyboard(driver, truth[cell], 3)
    seconds = time.monotonic() - start
    assert len(db_answers(over)) == 100 and progress(driver).startswith("100 / ")
    with capsys.disabled():
        print(f"\n100 cells answered by keyboard in the browser: {seconds:.1f} s ({1000 * seconds / 100:.0f} ms a cell)")
    while (cell := shown(driver)) is not None:  # the rest of the sample, to the end
        by_keyboard(driver, truth[cell], 3)
    assert driver.find_element("id", "done").text == "All done, kim"
    assert len(db_answers(over)) == len(sample)
    screenshot(driver, screens, "done")


def test_a_token_is_required_off_loopback(region, servers, browsers, tmp_path):
    over, truth, sample, gold, screens = region
    _, base = servers(over, "--host", "0.0.0.0")
    log = tmp_path / "server.log"
    deadline = time.monotonic() + 20
    while "?token=" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    token = re.search(r"\?token=(\S+)", log.read_text()).group(1)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/")
    assert refused.value.code == 401
    assert "needs its access token" in html.unescape(refused.value.read().decode())
    driver = browsers()
    driver.get(base + "/qa")
    assert "needs its access token" in driver.find_element("id", "error").text
    screenshot(driver, screens, "refused_token")
    driver.get(base + f"/?token={token}")
    driver.get(base + "/qa")  # the cookie carries it from now on
    assert driver.find_elements("id", "pairs")
