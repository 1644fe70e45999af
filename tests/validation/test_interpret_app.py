"""The interpreters' web app in-process (Flask's test client): assignment, answers kept in
SQLite (WAL) through restarts, two interpreters at once, agreement and kappa, gold
scores, adjudication, export into validate interpret / estimate, and every bad input
(HTTP 4xx with a sentence in the app; one line and exit status 2 on the command line).
The same app in a real browser: test_interpret_browser.py."""

from __future__ import annotations

import html
import json
import shutil
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from helpers.cli import expect_error
from helpers.interpreting import answer_next, make_app, page_form, shown_cell
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.validation import estimate
from urbanmap.validation.app import quality
from urbanmap.validation.app.store import Store
from urbanmap.validation.interpret import human_answers
from urbanmap.validation.settings import ValidationSettings


@pytest.fixture
def region(sampled, tmp_path, in_repo):
    """A copy of the sampled region of its own for a test; returns (overrides, cells,
    sample, gold)."""
    root, over, cells, sample, gold = sampled
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    over = [o.replace(str(root), str(tmp_path)) for o in over]
    return [*over, f"validation.app.gold={tmp_path / 'gold.csv'}"], cells, sample, gold


def truth_of(cells):
    table = dict(zip(cells["cell_id"], cells["truth"]))
    return lambda cell: table[cell]


# --- pure rules ---------------------------------------------------------------------------


def test_kappa_by_hand_and_against_scikit_learn():
    # 10 cells: a and b agree on 7. Shares: a urban 5, non 4, cannot 1; b urban 4, non 5, cannot 1.
    a = ["urban"] * 5 + ["non_urban"] * 4 + ["cannot_tell"]
    b = ["urban"] * 3 + ["non_urban"] * 2 + ["non_urban"] * 3 + ["urban"] + ["cannot_tell"]
    p_o = 7 / 10
    p_e = 0.5 * 0.4 + 0.4 * 0.5 + 0.1 * 0.1
    assert quality.cohen_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))
    assert quality.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert quality.cohen_kappa(["urban"] * 3, ["urban"] * 3) is None  # p_e = 1: undefined
    assert quality.cohen_kappa([], []) is None


def test_resolve_and_disagreements():
    current = pd.DataFrame({"interpreter": ["a", "b", "a", "b", "a", "a"], "cell_id": ["x", "x", "y", "y", "z", "g"],
                            "answer": ["urban", "urban", "urban", "non_urban", "cannot_tell", "urban"],
                            "gold": [False] * 5 + [True]})
    r = quality.resolve(["x", "y", "z", "w"], current[~current["gold"]], pd.Series(dtype=object))
    assert r["source"].tolist() == ["agreed", "disagreement", "single", "unanswered"]
    assert r["answer"].tolist()[:1] == ["urban"] and r["answer"].isna().tolist() == [False, True, False, True]
    settled = quality.resolve(["y"], current, pd.Series({"y": "non_urban"}))
    assert settled.iloc[0][["answer", "source"]].tolist() == ["non_urban", "adjudicated"]
    assert quality.disagreements(current).index.tolist() == ["y"]
    double = quality.double_coded(100, 0.2, 42)
    assert double.sum() == 20 and (double == quality.double_coded(100, 0.2, 42)).all()


# --- the store through the app ---------------------------------------------------------------


def test_answers_survive_a_new_app_and_the_interpreter_resumes(region):
    over, cells, sample, gold = region
    client, ctx = make_app(over)
    assert ctx.store.journal_mode() == "wal"
    truth = truth_of(cells)
    done = [answer_next(client, "ana", lambda c: gold.get(c) or truth(c))[0] for _ in range(4)]
    page = client.get("/?interpreter=ana").get_data(as_text=True)
    skipped = shown_cell(page)
    assert client.post("/answer", data={**page_form(page), "action": "skip"}).status_code == 303
    after_skip = shown_cell(client.get("/?interpreter=ana").get_data(as_text=True))
    assert after_skip not in done and after_skip != skipped

    client2, _ = make_app(over)  # a restart: the same database
    page = client2.get("/?interpreter=ana").get_data(as_text=True)
    assert shown_cell(page) == after_skip
    assigned = ctx.store.progress("ana")["assigned"]
    assert assigned == 50 + 1  # the batch, and gold cells in proportion: ceil(50 x 2 gold / 169 sample cells)
    assert f"4 / {assigned} answered · 1 skipped" in page and f"cell={skipped}" in page
    answers = Store.open(ValidationSettings.from_config(config.load(REPO, over)).database).current_answers()
    assert answers["cell_id"].tolist() == done and (answers["interpreter"] == "ana").all()
    # the skipped cell comes back after the others of the batch
    while (cell := answer_next(client2, "ana", lambda c: gold.get(c) or truth(c))[0]) != skipped:
        assert cell is not None
    progress = ctx.store.progress("ana")
    assert progress["answered"] == progress["assigned"] == assigned and progress["skipped"] == 0


def test_double_coded_cells_form_pairs_and_gold_cells_are_mixed_in(region):
    over, cells, sample, gold = region
    client, ctx = make_app([*over, "validation.app.double_share=0.3", "validation.app.batch=20"])
    items = ctx.items
    double = set(items.loc[items["copies"] == 2, "cell_id"])
    assert len(double) == round(0.3 * len(sample))
    truth = truth_of(cells)
    for name in ("ana", "ben"):
        while answer_next(client, name, lambda c: gold.get(c) or truth(c))[0] is not None:
            pass
    current = ctx.store.current_answers()
    by_cell = current[~current["gold"]].groupby("cell_id")["interpreter"].nunique()
    assert set(by_cell[by_cell == 2].index) == double  # two interpreters on the double-coded cells only
    assert set(current[~current["gold"]]["cell_id"]) == set(sample["cell_id"])  # every sample cell once at least
    assert set(current.loc[current["gold"], "cell_id"]) == set(gold)  # each gold cell reached someone
    assert ctx.store.gold_chip(next(iter(gold)))[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_interpreters_at_once_do_not_overwrite_each_other(region):
    over, cells, sample, gold = region
    over = [*over, "validation.app.double_share=1.0", "validation.app.batch=30"]
    make_app(over)
    given: dict[str, list[tuple[str, str]]] = {"ana": [], "ben": []}
    errors = []

    def work(name, answer):
        client, _ = make_app(over)  # each its own app on the one database, as two servers would be
        try:
            for _ in range(25):
                cell, response = answer_next(client, name, lambda c: answer)
                assert response.status_code == 303, response.get_data(as_text=True)
                given[name].append((cell, answer))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=("ana", "urban")), threading.Thread(target=work, args=("ben", "non_urban"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    current = Store.open(ValidationSettings.from_config(config.load(REPO, over)).database).current_answers()
    for name, pairs in given.items():
        mine = current[current["interpreter"] == name]
        assert sorted(zip(mine["cell_id"], mine["answer"])) == sorted(pairs)


def test_a_wrong_gold_answer_lowers_the_score(region):
    over, cells, sample, gold = region
    client, ctx = make_app([*over, "validation.app.batch=200"])
    truth = truth_of(cells)
    wrong = next(iter(gold))
    seen = []
    while len(seen) < len(gold):
        cell, _ = answer_next(client, "ana", lambda c: ({"urban": "non_urban", "non_urban": "urban"}[gold[c]]
                                                         if c == wrong else gold.get(c) or truth(c)))
        assert cell is not None
        if cell in gold:
            seen.append(cell)
            score = quality.gold_scores(ctx.store.current_answers(), ctx.gold).set_index("interpreter").loc["ana"]
            right = sum(c != wrong for c in seen)
            assert (score["answered"], score["right"]) == (len(seen), right)
            assert score["accuracy"] == pytest.approx(right / len(seen))
    page = client.get("/qa").get_data(as_text=True)
    assert '<td class="num gold-score">50.0%</td>' in page


# --- export into the pipeline ---------------------------------------------------------------


def test_export_then_validate_estimate_gives_the_estimate_of_the_answers(region, capsys):
    over, cells, sample, gold = region
    over = [*over, "validation.app.double_share=0.5", "validation.app.batch=40"]
    client, ctx = make_app(over)
    truth = truth_of(cells)
    rng = np.random.default_rng(5)
    plan = {c: rng.choice(["urban", "non_urban", "cannot_tell"], p=[0.45, 0.45, 0.1]) for c in sample["cell_id"]}
    flips = {c: {"urban": "non_urban", "non_urban": "urban"}.get(plan[c], "urban") for c in sample["cell_id"][::7]}
    for c, t in zip(sample["cell_id"], sample["cell_id"].map(truth)):
        plan[c] = t if plan[c] != "cannot_tell" else plan[c]
    for name, answers in (("ana", plan), ("ben", {**plan, **flips})):
        for _ in range(60):
            answer_next(client, name, lambda c, a=answers: gold.get(c) or a[c])
    current = ctx.store.current_answers()
    open_cells = quality.disagreements(current).index.tolist()
    assert open_cells, "the test needs a disagreement to settle"
    settle = open_cells[0]
    page = client.get("/qa").get_data(as_text=True)
    nonce = page.split(f'name="cell" value="{settle}"><input type="hidden" name="nonce" value="')[1].split('"')[0]
    assert client.post("/adjudicate", data={"cell": settle, "nonce": nonce, "adjudicator": "chief", "answer": "urban",
                                            "comment": "roofs"}).status_code == 303

    assert main(["interpret", "export", *over]) == 0
    printed = capsys.readouterr().out
    cfg = config.load(REPO, over)
    human = pd.read_csv(ValidationSettings.from_config(cfg).human, dtype=str, keep_default_na=False)
    assert list(human.columns) == list(pd.read_csv(paths.validation_sample(cfg)).columns)
    # the same answers, directly: adjudicated wins, agreed or single answers stand, open
    # disagreements, cannot tell and gold cells left out
    current = ctx.store.current_answers()
    mine = current[~current["gold"]]
    expected = {}
    for cell, group in mine.groupby("cell_id"):
        given = set(group["answer"])
        answer = "urban" if cell == settle else (given.pop() if len(given) == 1 else None)
        if answer in ("urban", "non_urban"):
            expected[cell] = answer
    assert dict(zip(human["cell_id"], human["ref_class"])) == expected
    assert not set(human["cell_id"]) & set(gold)
    assert f"{len(expected)} of {len(sample)} sample cells" in printed and "kappa" in printed
    qa = json.loads(ValidationSettings.from_config(cfg).human_qa.read_text())
    assert qa["exported"] == len(expected) and qa["gold_answers_left_out"] == int(current["gold"].sum())

    assert main(["validate", "interpret", *over, "validation.interpreter=human"]) == 0
    assert main(["validate", "estimate", *over]) == 0
    got = json.loads(paths.validation_estimate(cfg).read_text())
    rows = sample.set_index("cell_id").loc[list(expected)]
    strata = pd.read_csv(paths.validation_strata(cfg)).set_index("class")["area"]
    direct = estimate.stratified_estimates(rows["map_class"].to_numpy(), np.array(list(expected.values())), strata,
                                           classes=["urban", "non_urban"])
    assert got["n"] == len(expected)
    assert got["overall_accuracy"] == pytest.approx(direct["overall_accuracy"])
    for key in ("area", "users_accuracy", "producers_accuracy"):
        for c in ("urban", "non_urban"):
            assert got[key][c] == pytest.approx(direct[key][c]), (key, c)


def test_human_answers_are_checked_against_the_sample(tmp_path, region, capsys):
    over, cells, sample, gold = region
    cfg = config.load(REPO, over)
    human = ValidationSettings.from_config(cfg).human
    expect_error(capsys, paths.region_dir(cfg), ["validate", "interpret", *over, "validation.interpreter=human"],
                 "human.csv", "urbanmap interpret export")
    text = pd.read_csv(paths.validation_sample(cfg), dtype=str, keep_default_na=False)
    text.assign(ref_class="urban").assign(cell_id=lambda f: f["cell_id"].where(f.index > 0, "E0000N0000")).to_csv(human, index=False)
    expect_error(capsys, paths.region_dir(cfg), ["validate", "interpret", *over, "validation.interpreter=human"],
                 "human.csv", "cell E0000N0000 is not one of sample.csv's")
    text.assign(ref_class="maybe").to_csv(human, index=False)
    with pytest.raises(Exception, match="ref_class 'maybe'"):
        human_answers(text, human)


# --- bad input: in the app -------------------------------------------------------------------


def _refused(response, status, *fragments):
    text = html.unescape(response.get_data(as_text=True))
    assert response.status_code == status, text
    assert '<p class="error" id="error">' in text
    for fragment in fragments:
        assert fragment in text, text
    return text


def test_bad_requests_get_a_4xx_with_a_sentence_and_nothing_is_saved(region):
    over, cells, sample, gold = region
    client, ctx = make_app(over)
    page = client.get("/?interpreter=ana").get_data(as_text=True)
    form = page_form(page)
    cell = form["cell"]
    other = next(c for c in sample["cell_id"] if not ctx.store.is_assigned("ana", c))
    good = {**form, "action": "answer", "answer": "urban", "confidence": "2", "comment": ""}

    # chip paths
    _refused(client.get("/chips/../../../etc/passwd"), 400, "not a relative path inside the chips folder")
    _refused(client.get("/chips/..%2F..%2Fsample.csv"), 400, "not a relative path")
    _refused(client.get("/chips/%2Fetc%2Fpasswd"), 400, "not a relative path")
    _refused(client.get("/chips/S9999_none.png"), 404, "was not found")
    assert client.get(f"/chips/{sample['chip'].iloc[0].removeprefix('chips/')}").status_code == 200
    chip = client.get(f"/chip/{cell}")
    assert chip.headers["Content-Type"] == "image/png", chip.get_data(as_text=True).split("id=\"error\">")[-1][:300]
    # unknown cells
    _refused(client.get("/cell/E9999N9999"), 404, "There is no cell 'E9999N9999' in this sample")
    _refused(client.get("/chip/E9999N9999"), 404, "no cell")
    _refused(client.get("/?interpreter=ana&cell=E9999N9999"), 404, "no cell")
    _refused(client.post("/answer", data={**good, "cell": "E9999N9999"}), 404, "no cell", "nothing was saved")
    # a cell of the sample that is not ana's
    _refused(client.get(f"/?interpreter=ana&cell={other}"), 403, f"Cell {other} is not assigned to interpreter 'ana'")
    forged = {**good, "cell": other}
    _refused(client.post("/answer", data=forged), 400, "one-time key")  # the key is for another cell
    _refused(client.post("/answer", data={**good, "interpreter": "ben"}), 400, "one-time key")
    # malformed posts
    _refused(client.post("/answer", data={k: v for k, v in good.items() if k != "nonce"}), 400, "one-time key")
    _refused(client.post("/answer", data={**good, "nonce": "garbage"}), 400, "one-time key")
    _refused(client.post("/answer", data={**good, "answer": ""}), 400, "Choose an answer")
    _refused(client.post("/answer", data={**good, "answer": "maybe"}), 400, "'maybe' is not urban")
    _refused(client.post("/answer", data={**good, "confidence": "7"}), 400, "Confidence '7' is not 1, 2 or 3")
    _refused(client.post("/answer", data={**good, "action": "delete"}), 400, "is not answer or skip")
    _refused(client.post("/answer", data={**good, "comment": "x" * 1001}), 400, "longer than 1000")
    _refused(client.post("/answer", data={**good, "interpreter": "../x"}), 400, "name '../x' is not valid")
    _refused(client.post("/answer", data={**good, "comment": "x" * 70_000}), 413, "too large")
    _refused(client.get("/?interpreter="), 400, "is not valid")
    assert ctx.store.current_answers().empty  # nothing saved by any of them
    # replayed
    assert client.post("/answer", data=good).status_code == 303
    _refused(client.post("/answer", data=good), 409, "already sent once", "nothing was saved again")
    assert len(ctx.store.current_answers()) == 1
    # adjudication forms
    _refused(client.post("/adjudicate", data={"cell": cell, "nonce": "x.y", "adjudicator": "chief", "answer": "urban"}),
             400, "one-time key")
    gold_cell = next(iter(gold))
    _refused(client.get("/map?layer=nope"), 404, "There is no map 'nope'")
    _refused(client.get("/nowhere"), 404, "no such page")
    assert client.get(f"/cell/{gold_cell}").status_code == 200


def test_a_database_gone_read_only_or_missing_and_a_changed_sample_are_refused(region):
    over, cells, sample, gold = region
    client, ctx = make_app(over)
    page = client.get("/?interpreter=ana").get_data(as_text=True)
    good = {**page_form(page), "action": "answer", "answer": "urban", "confidence": "2"}
    db = ctx.store.path
    db.chmod(0o444)
    _refused(client.post("/answer", data=good), 409, "is read-only: nothing was saved")
    db.chmod(0o644)
    db.rename(db.with_suffix(".moved"))
    _refused(client.post("/answer", data=good), 409, "is missing")
    assert not db.exists()  # the app never makes an empty one behind the interpreter's back
    db.with_suffix(".moved").rename(db)
    sample_path = ctx.settings.sample
    original = sample_path.read_bytes()
    sample_path.write_bytes(original.replace(b"urban", b"URBAN", 1))
    _refused(client.get("/?interpreter=ana"), 409, "changed since the answers' database was made")
    _refused(client.post("/answer", data=good), 409, "changed since")
    sample_path.write_bytes(original)
    assert client.post("/answer", data=good).status_code == 303
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 1


def test_a_token_is_required_off_loopback(region):
    over, cells, sample, gold = region
    client, ctx = make_app(over, host="0.0.0.0")
    assert ctx.token and len(ctx.token) >= 16
    _refused(client.get("/"), 401, "needs its access token")
    assert client.get("/static/app.css").status_code == 200  # the app's own CSS: no data, so the refusal page has style
    _refused(client.get("/?token=wrong"), 401, "access token")
    assert client.get(f"/?token={ctx.token}").status_code == 200  # sets the cookie
    assert client.get("/qa").status_code == 200
    fresh, _ = make_app(over, host="0.0.0.0")
    assert fresh.get("/", headers={"X-Urbanmap-Token": _.token}).status_code == 200
    given, ctx3 = make_app([*over, "validation.app.token=s3cret-token"])  # a configured token, even on loopback
    assert ctx3.token == "s3cret-token"
    _refused(given.get("/"), 401, "access token")
    loopback, ctx4 = make_app(over)
    assert ctx4.token is None and loopback.get("/").status_code == 200


# --- bad input: on the command line ------------------------------------------------------------


def test_serve_and_export_refuse_bad_input_in_one_line(tmp_path, region, capsys):
    over, cells, sample, gold = region
    cfg = config.load(REPO, over)
    folder = paths.region_dir(cfg)
    db = ValidationSettings.from_config(cfg).database
    expect_error(capsys, folder, ["interpret", "export", *over], "interpretations.sqlite", "not found",
                 "urbanmap interpret serve")
    expect_error(capsys, folder, ["interpret", "serve", *over, "validation.app.double_share=1.5"],
                 "validation.app.double_share: 1.5 is not in [0, 1]")
    expect_error(capsys, folder, ["interpret", "serve", *over, "validation.app.token=short"],
                 "validation.app.token: needs at least 8 characters")
    expect_error(capsys, folder, ["interpret", "serve", "--port", "70000", *over], "--port 70000: not a port number")
    # gold cells that are not outside the sample, or not known
    bad_gold = tmp_path / "bad_gold.csv"
    pd.DataFrame({"cell_id": [sample["cell_id"].iloc[0]], "answer": ["urban"]}).to_csv(bad_gold, index=False)
    expect_error(capsys, folder, ["interpret", "serve", *over, f"validation.app.gold={bad_gold}"],
                 "bad_gold.csv", "is a sample cell")
    pd.DataFrame({"cell_id": ["E0001N0001"], "answer": ["urban"]}).to_csv(bad_gold, index=False)
    expect_error(capsys, folder, ["interpret", "serve", *over, f"validation.app.gold={bad_gold}"], "not a cell of the grid")
    pd.DataFrame({"cell_id": ["E0001N0001"], "answer": ["cannot_tell"]}).to_csv(bad_gold, index=False)
    expect_error(capsys, folder, ["interpret", "serve", *over, f"validation.app.gold={bad_gold}"], "is not urban or non_urban")
    # a chip path that leaves the folder
    sample_path = paths.validation_sample(cfg)
    original = sample_path.read_bytes()
    for chip in ("../../secret.png", "/etc/passwd"):
        pd.read_csv(sample_path, dtype=str, keep_default_na=False).assign(chip=chip).to_csv(sample_path, index=False)
        expect_error(capsys, folder, ["interpret", "serve", *over], "sample.csv", f"chip {chip!r} is not a relative path")
    sample_path.write_bytes(original)

    make_app(over)  # the database, made from this sample and these gold cells
    assert db.is_file()
    before = db.read_bytes()
    sample_path.write_bytes(original.replace(b"urban", b"URBAN", 1))
    err = expect_error(capsys, folder, ["interpret", "serve", *over], "sample.csv", "changed since the answers' database")
    assert "move the database aside" in err
    expect_error(capsys, folder, ["interpret", "export", *over], "sample.csv", "changed since")
    sample_path.write_bytes(original)
    expect_error(capsys, folder, ["interpret", "serve", *over, "validation.app.gold=null"], "gold cells differ")
    db.chmod(0o444)
    expect_error(capsys, folder, ["interpret", "serve", *over], "interpretations.sqlite", "read-only")
    db.chmod(0o644)
    db.write_bytes(b"not a database at all, just bytes")
    expect_error(capsys, folder, ["interpret", "serve", *over], "interpretations.sqlite", "not an answers' database")
    db.write_bytes(before)
    expect_error(capsys, folder, ["interpret", "export", *over], "no sample cell has an urban or non-urban answer yet")
    assert db.read_bytes() == before


def test_the_page_is_blind_unless_the_config_shows_the_map_class(region):
    over, cells, sample, gold = region
    client, ctx = make_app(over)
    page = client.get("/?interpreter=ana").get_data(as_text=True)
    item = ctx.item(shown_cell(page))
    assert "The map says" not in page and "map_class" not in page and str(item["sample_id"]) not in page
    shown, _ = make_app([*over, "validation.app.show_map_class=true"])
    assert "The map says" in shown.get("/?interpreter=ana").get_data(as_text=True)


def test_the_interpreter_switch_selects_validate_interprets_input(in_repo):
    """dvc.yaml's validate_interpret depends on validation.inputs.interpret, which the
    composed config points at the synthetic truth or, with human, at the export."""
    import yaml

    from urbanmap.core.config import compose

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["validate_interpret"]
    assert "${validation.inputs.interpret}" in stage["deps"] and "validation.interpreter" in stage["params"]
    for interpreter, expected in (("simulated", "data/valle_de_mexico/truth/2019H2"),
                                  ("human", "data/valle_de_mexico/validation/human.csv")):
        cfg = compose(REPO / "conf", [f"validation.interpreter={interpreter}"])
        assert cfg.validation.inputs.interpret == expected
        assert str(ValidationSettings.from_config(cfg).human) == "data/valle_de_mexico/validation/human.csv"
