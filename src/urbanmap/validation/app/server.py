"""The web app's pages (Flask): server-rendered HTML with a little JavaScript, every asset
served by the app itself (templates/, static/: no CDN, nothing fetched at run time).

Pages:

- `/`: the start page (an interpreter gives a name; the QA and map pages); with
  `?interpreter=<name>` it starts or resumes that interpreter's session at their next
  cell (`&cell=<cell_id>` opens one of theirs: a skipped or an answered one).
- `POST /answer`: an answer (or a skip) of one cell; committed, then the browser is sent
  to the next cell (303). The form's one-time key, signed for the interpreter and the
  cell, refuses a replayed, edited or malformed form.
- `/qa`: interpreters' progress and gold scores, agreement and Cohen's kappa per pair,
  the disagreements and a form to settle each (`POST /adjudicate`).
- `/map`: the period's map (and the change map, and the census period's map) with the
  sample cells on it; a cell opens `/cell/<cell_id>`: its chips and, once interpreted,
  its answers.
- `/chip/<cell_id>`: a cell's chip sheet; `/chips/<path>`: the files of the chips folder.

Every refusal is an HTTP 4xx with a sentence saying what was wrong and that nothing was
saved. When a token is required (a host that is not loopback), every request carries it:
`?token=` once (then a cookie), or the X-Urbanmap-Token header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from flask import Flask, Response, redirect, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from urbanmap.validation.app import quality
from urbanmap.validation.app.inputs import CellMap, read_cell_map, safe_relative
from urbanmap.validation.app.store import RequestError, Store, check_name, file_hash
from urbanmap.validation.settings import AppSettings, ValidationSettings

#: Longest comment kept (characters).
MAX_COMMENT = 1000
#: The cookie that carries the token after a first `?token=`.
TOKEN_COOKIE = "urbanmap_token"
#: Colours of the sample cells on the map, by the state of their answer.
STATE_COLOURS = {"unanswered": "#1d2330", "single": "#35b8ff", "agreed": "#1a9641", "disagreement": "#ff8c00",
                 "adjudicated": "#b04fd8"}


@dataclass
class Context:
    """What the pages read: the store, the settings, the sample's items, the chips'
    layout, the maps that exist (layer -> (title, file, what, column)) and the token
    (None: none required)."""

    store: Store
    settings: ValidationSettings
    app: AppSettings
    items: pd.DataFrame
    layout: dict[str, Any]
    maps: dict[str, tuple[str, Path, str, str]]
    token: str | None
    sample_hash: str
    _sample_stat: tuple[int, int] | None = None
    _maps: dict[str, CellMap] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_cell: dict[str, dict[str, Any]] = {str(r["cell_id"]): {str(k): v for k, v in r.items()}
                                                   for r in self.items.to_dict("records")}
        self.sample_cells = [str(c) for c in self.items.loc[self.items["gold_answer"].isna(), "cell_id"]]
        self.gold = self.items.loc[self.items["gold_answer"].notna()].set_index("cell_id")["gold_answer"]

    def item(self, cell_id: str | None, posted: bool = False) -> dict[str, Any]:
        """The item of `cell_id`; RequestError 404 naming an unknown cell (and saying that
        nothing was saved, for a `posted` form)."""
        if not cell_id or cell_id not in self.by_cell:
            raise RequestError(404, f"There is no cell {str(cell_id or '')[:60]!r} in this sample"
                                    + (": nothing was saved." if posted else "."))
        return dict(self.by_cell[cell_id])

    def check_sample(self) -> None:
        """RequestError 409 when sample.csv changed since the database was made (its hash
        is computed again only when its size or time changed)."""
        path = self.settings.sample
        try:
            st = os.stat(path)
        except OSError:
            raise RequestError(409, f"The sample file {path} is missing: nothing is shown or saved. Put it back.") from None
        key = (st.st_mtime_ns, st.st_size)
        if key == self._sample_stat:
            return
        now = file_hash(path)
        if now != self.sample_hash:
            raise RequestError(409, f"The sample file {path} changed since the answers' database was made (SHA-256 "
                                    f"{self.sample_hash[:12]}… then, {now[:12]}… now): nothing is shown or saved. "
                                    "Restore the sample, or move the database aside and restart.")
        self._sample_stat = key

    def cell_map(self, layer: str) -> CellMap:
        """The map of `layer`, rendered once."""
        if layer not in self._maps:
            _, path, what, column = self.maps[layer]
            self._maps[layer] = read_cell_map(path, what, column)
        return self._maps[layer]


def sign(secret: bytes, *parts: str) -> str:
    """A one-time form key: a random part and its HMAC with `parts` (kind, who, cell)."""
    nonce = secrets.token_hex(8)
    mac = hmac.new(secret, "|".join((nonce, *parts)).encode(), hashlib.sha256).hexdigest()[:32]
    return f"{nonce}.{mac}"


def verify(secret: bytes, key: str, *parts: str) -> bool:
    """Whether `key` was made by `sign` with `parts`."""
    nonce, _, mac = (key or "").partition(".")
    if not nonce or not mac:
        return False
    expected = hmac.new(secret, "|".join((nonce, *parts)).encode(), hashlib.sha256).hexdigest()[:32]
    return hmac.compare_digest(mac, expected)


def _form_text(name: str, limit: int = 200) -> str:
    """A form field as text ('' when absent); RequestError 400 when longer than `limit`."""
    value = request.form.get(name, "")
    if len(value) > limit:
        raise RequestError(400, f"The form's field {name!r} is longer than {limit} characters: nothing was saved.")
    return value


def _comment() -> str:
    """The form's comment, stripped; control characters (but new lines) refused."""
    text = _form_text("comment", MAX_COMMENT).strip()
    if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in text):
        raise RequestError(400, "The comment holds control characters: nothing was saved.")
    return text


def _answer_fields() -> tuple[str, int]:
    """The form's answer and confidence; RequestError 400 when either is missing or wrong."""
    answer = _form_text("answer")
    if answer not in quality.ANSWERS:
        raise RequestError(400, "Choose an answer (urban, non-urban or cannot tell) before submitting: nothing was saved."
                           if not answer else f"Answer {answer[:40]!r} is not urban, non_urban or cannot_tell: nothing was saved.")
    confidence = _form_text("confidence")
    if confidence not in ("1", "2", "3"):
        raise RequestError(400, "Choose a confidence of 1, 2 or 3 before submitting: nothing was saved."
                           if not confidence else f"Confidence {confidence[:20]!r} is not 1, 2 or 3: nothing was saved.")
    return answer, int(confidence)


def create_app(ctx: Context) -> Flask:
    """The Flask app of `ctx` (module docstring)."""
    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    # `/chips//etc/passwd` reaches the route (and is refused there) instead of a redirect
    app.url_map.merge_slashes = False
    app.jinja_env.globals.update(labels=quality.ANSWER_LABELS, answers=quality.ANSWERS)

    @app.before_request
    def _guard() -> Response | None:
        if ctx.token is not None and request.endpoint != "static":  # the app's own CSS and JS hold no data
            given = request.args.get("token") or request.cookies.get(TOKEN_COOKIE) or request.headers.get("X-Urbanmap-Token")
            if not given or not hmac.compare_digest(given.encode(), ctx.token.encode()):
                raise RequestError(401, "This server needs its access token: open the address printed when it "
                                        "started (it ends in ?token=...).")
        if request.endpoint != "static":
            ctx.store.check_file()
            ctx.check_sample()
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        if ctx.token is not None and request.args.get("token") == ctx.token:
            response.set_cookie(TOKEN_COOKIE, ctx.token, httponly=True, samesite="Strict")
        if response.mimetype == "text/html":
            response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(RequestError)
    def _refused(exc: RequestError) -> tuple[str, int]:
        return render_template("error.html", status=exc.status, message=str(exc)), exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 400
        if status == 404 and request.path.startswith("/chips/"):  # /chips//etc/passwd: no route takes it
            return _refused(RequestError(400, f"Chip path {request.path[7:87]!r} is not a relative path inside the "
                                              "chips folder."))
        sentences = {404: "There is no such page in this app.", 405: "This page does not take that kind of request.",
                     413: "The form is too large: nothing was saved.",
                     400: "The request is malformed: nothing was saved."}
        return render_template("error.html", status=status, message=sentences.get(status, str(exc.description))), status

    @app.get("/")
    def index() -> str:
        if "interpreter" not in request.args:
            return render_template("home.html", people=ctx.store.interpreters().to_dict("records"),
                                   n_sample=len(ctx.sample_cells))
        name = check_name(request.args.get("interpreter"))
        wanted = request.args.get("cell")
        if wanted is not None:
            ctx.item(wanted)
            if not ctx.store.is_assigned(name, wanted):
                raise RequestError(403, f"Cell {wanted} is not assigned to interpreter {name!r}.")
            cell: str | None = wanted
        else:
            cell = ctx.store.next_cell(name)
            if cell is None and ctx.store.assign_more(name, ctx.app.batch):
                cell = ctx.store.next_cell(name)
        progress = ctx.store.progress(name)
        if cell is None:
            return render_template("done.html", name=name, progress=progress)
        item = ctx.item(cell)
        return render_template(
            "interpret.html", name=name, item=item, progress=progress, layout=ctx.layout,
            previous=ctx.store.answer_of(name, cell), skipped=ctx.store.skipped(name), recent=ctx.store.recent(name),
            nonce=sign(ctx.store.secret, "answer", name, cell), show_map_class=ctx.app.show_map_class,
            chip=url_for("chip", cell_id=cell))

    @app.post("/answer")
    def answer() -> BaseResponse:
        name = check_name(_form_text("interpreter"))
        cell = _form_text("cell")
        ctx.item(cell, posted=True)
        if not verify(ctx.store.secret, _form_text("nonce"), "answer", name, cell):
            raise RequestError(400, "The form's one-time key is missing or does not match its interpreter and cell "
                                    "(an edited or malformed form): nothing was saved. Open the cell anew.")
        action = _form_text("action") or "answer"
        if action == "skip":
            ctx.store.skip(name, cell, _form_text("nonce"))
        elif action == "answer":
            value, confidence = _answer_fields()
            ctx.store.save_answer(name, cell, value, confidence, _comment(), _form_text("nonce"))
        else:
            raise RequestError(400, f"Action {action[:20]!r} is not answer or skip: nothing was saved.")
        return redirect(url_for("index", interpreter=name), code=303)

    @app.get("/qa")
    def qa() -> str:
        current = ctx.store.current_answers()
        adjudicated = ctx.store.adjudicated()
        sample = current[~current["gold"]]
        resolved = quality.resolve(ctx.sample_cells, sample, adjudicated)
        differ = quality.disagreements(current)
        rows = []
        for cell, answers in differ.iterrows():
            given = {k: v for k, v in answers.items() if isinstance(v, str)}
            rows.append({"cell_id": cell, "given": given, "settled": adjudicated.get(cell),
                         "nonce": sign(ctx.store.secret, "adjudicate", str(cell))})
        gold = quality.gold_scores(current, ctx.gold).set_index("interpreter")
        people = []
        for r in ctx.store.interpreters().to_dict("records"):
            score = gold.loc[r["name"]] if r["name"] in gold.index else None
            people.append({**r, "gold": None if score is None else {"answered": int(score["answered"]),
                                                                   "right": int(score["right"]),
                                                                   "accuracy": float(score["accuracy"])}})
        counts = resolved["source"].value_counts().to_dict()
        cannot = int((resolved["answer"] == "cannot_tell").sum())
        return render_template("qa.html", people=people, pairs=quality.pair_agreement(current).to_dict("records"),
                               disagreements=rows, counts=counts, cannot=cannot, n_sample=len(ctx.sample_cells),
                               n_gold=len(ctx.gold))

    @app.post("/adjudicate")
    def adjudicate() -> BaseResponse:
        cell = _form_text("cell")
        ctx.item(cell, posted=True)
        who = check_name(_form_text("adjudicator"), "adjudicator")
        if not verify(ctx.store.secret, _form_text("nonce"), "adjudicate", cell):
            raise RequestError(400, "The form's one-time key is missing or does not match its cell (an edited or "
                                    "malformed form): nothing was saved. Reload the QA page.")
        answer = _form_text("answer")
        if answer not in quality.ANSWERS:
            raise RequestError(400, "Choose the answer that settles the cell: nothing was saved.")
        ctx.store.adjudicate(cell, answer, who, _comment(), _form_text("nonce"))
        return redirect(url_for("qa") + "#disagreements", code=303)

    @app.get("/map")
    def map_page() -> str:
        if not ctx.maps:
            raise RequestError(404, "No map of this region was found (predictions or change): run `urbanmap predict`.")
        layer = request.args.get("layer", next(iter(ctx.maps)))
        if layer not in ctx.maps:
            raise RequestError(404, f"There is no map {layer[:40]!r}; choose one of {', '.join(ctx.maps)}.")
        cmap = ctx.cell_map(layer)
        current = ctx.store.current_answers()
        resolved = quality.resolve(ctx.sample_cells, current[~current["gold"]], ctx.store.adjudicated())
        state = dict(zip(resolved["cell_id"], resolved["source"]))
        cells = [{"cell_id": c, "x": int(ctx.by_cell[c]["col"]) - cmap.col0, "y": cmap.row1 - int(ctx.by_cell[c]["row"]),
                  "state": state.get(c, "unanswered")} for c in ctx.sample_cells]
        return render_template("map.html", layer=layer, layers={k: v[0] for k, v in ctx.maps.items()}, cmap=cmap,
                               cells=cells, colours=STATE_COLOURS)

    @app.get("/map/<layer>.png")
    def map_png(layer: str) -> Response:
        if layer not in ctx.maps:
            raise RequestError(404, f"There is no map {layer[:40]!r}.")
        response = Response(ctx.cell_map(layer).png, mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=600"
        return response

    @app.get("/cell/<cell_id>")
    def cell_page(cell_id: str) -> str:
        item = ctx.item(cell_id)
        answers, adjudications = ctx.store.history(cell_id)
        current = ctx.store.current_answers()
        final = None
        if item["gold_answer"] is None:
            final = quality.resolve([cell_id], current[current["cell_id"] == cell_id], ctx.store.adjudicated()).iloc[0]
        return render_template("cell.html", item=item, answers=answers, adjudications=adjudications, layout=ctx.layout,
                               final=None if final is None else final.to_dict(), chip=url_for("chip", cell_id=cell_id))

    @app.get("/chip/<cell_id>")
    def chip(cell_id: str) -> Response:
        item = ctx.item(cell_id)
        if item["gold_answer"] is not None:
            png = ctx.store.gold_chip(cell_id)
            if png is None:
                raise RequestError(404, f"Cell {cell_id} has no chip.")
            response = Response(png, mimetype="image/png")
            response.headers["Cache-Control"] = "private, max-age=3600"
            return response
        return _chip_file(str(item["chip"]))

    @app.get("/chips/<path:name>")
    def chips_file(name: str) -> Response:
        relative = safe_relative(name)
        if relative is None:
            raise RequestError(400, f"Chip path {name[:80]!r} is not a relative path inside the chips folder.")
        return _chip_file(f"chips/{relative}")

    def _chip_file(relative: str) -> Response:
        """A file of the validation folder named by a checked relative path."""
        folder = ctx.settings.folder.resolve()
        path = (folder / relative).resolve()
        if folder not in path.parents or safe_relative(relative) is None:
            raise RequestError(400, f"Chip path {relative[:80]!r} is not a relative path inside the chips folder.")
        if not path.is_file():
            raise RequestError(404, f"Chip {relative[:80]!r} was not found: run `urbanmap validate sample` again.")
        return send_file(path, max_age=3600, conditional=True)

    return app
