"""`urbanmap interpret serve | export`: the command line of the interpreters' web app.

`serve [--host H] [--port P] [key=value ...]` opens the answers' database
(validation/interpretations.sqlite), or makes it from sample.csv, the chips and the gold
cells, and serves the app until Ctrl-C. It refuses to start (one line, exit status 2)
when the database is read-only or not one of this app's, or when sample.csv or the gold
file changed since the database was made (saying which), so that answers never get
mixed with another sample's. Off loopback it requires a token: validation.app.token, or
a random one printed with the address.

`export [--out F] [key=value ...]`: see export.py.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
from pathlib import Path

from flask import Flask
from omegaconf import DictConfig
from werkzeug.serving import make_server

from urbanmap.core import config, io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.periods import PeriodSettings
from urbanmap.validation.app.export import run_export
from urbanmap.validation.app.inputs import gold_chips, items_table, read_gold, read_layout, read_sample
from urbanmap.validation.app.server import Context, create_app
from urbanmap.validation.app.store import Store, file_hash
from urbanmap.validation.settings import AppSettings, ValidationSettings


def is_loopback(host: str) -> bool:
    """Whether `host` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_store(settings: ValidationSettings, app: AppSettings) -> tuple[Store, str, bool]:
    """The answers' database, checked against the sample and the gold file, or a new one;
    returns (store, the sample's SHA-256, whether it was made now)."""
    sample = read_sample(settings.sample)
    sample_hash = file_hash(settings.sample)
    gold_hash = file_hash(io.require_file(app.gold, "gold-standard cells (validation.app.gold)")) if app.gold else ""
    layout = read_layout(settings.chips_dir)
    for chip in sample["chip"]:
        io.require_file(settings.folder / chip, "chip")
    db = settings.database
    if db.exists():
        store = Store.open(db)
        then = store.meta.get("sample_sha256", "")
        if then != sample_hash:
            raise InputError(f"{settings.sample}: changed since the answers' database {db} was made from it (SHA-256 "
                             f"{then[:12]}… then, {sample_hash[:12]}… now); restore it, or move the database aside to "
                             "start afresh")
        if store.meta.get("gold_sha256", "") != gold_hash:
            was = store.meta.get("gold_file") or "no gold file"
            raise InputError(f"{app.gold or 'validation.app.gold'}: the gold cells differ from those the answers' database "
                             f"{db} was made with ({was}); restore them, or move the database aside to start afresh")
        return store, sample_hash, False
    io.require_writable_folder(db.parent)
    grid, _, _ = io.read_cells(settings.grid, "grid", ["cell_id"])
    gold = read_gold(app.gold, sample, grid) if app.gold else grid.iloc[:0].assign(answer="")[["cell_id", "answer", "col", "row"]]
    pngs = gold_chips(settings, layout, gold)
    items = items_table(sample, gold, pngs, app.double_share, settings.seed)
    meta = {"sample_file": str(settings.sample), "sample_sha256": sample_hash, "gold_file": str(app.gold or ""),
            "gold_sha256": gold_hash, "double_share": repr(app.double_share), "seed": str(settings.seed),
            "periods": ",".join(settings.chip_periods)}
    return Store.create(db, items, meta), sample_hash, True


def map_layers(cfg: DictConfig, settings: ValidationSettings) -> dict[str, tuple[str, Path, str, str]]:
    """The maps the map page offers, those whose files exist: layer -> (title, file,
    what, column)."""
    train = PeriodSettings.from_config(cfg).census.label
    layers = {
        "target": (f"Map of {settings.target_period}", settings.predictions, f"predictions of {settings.target_period}", "class"),
        "change": (f"Change {train} – {settings.target_period}", settings.change_cells, "change", "change"),
        "train": (f"Map of {train} (census period)", paths.predictions(cfg, train), f"predictions of {train}", "class"),
    }
    return {k: v for k, v in layers.items() if v[1].is_file() and (k != "train" or train != settings.target_period)}


def prepare(cfg: DictConfig, host: str) -> tuple[Flask, Context, bool]:
    """The app for `host` (its token required off loopback): the database opened or made
    (open_store), the pages' context; returns (app, context, whether the database is new)."""
    settings = ValidationSettings.from_config(cfg)
    app = AppSettings.from_config(cfg)
    store, sample_hash, made = open_store(settings, app)
    token = app.token
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(16)
    ctx = Context(store, settings, app, store.items(), read_layout(settings.chips_dir), map_layers(cfg, settings),
                  token, sample_hash)
    return create_app(ctx), ctx, made


def serve(cfg: DictConfig, host: str | None, port: int | None) -> None:
    """Step `interpret serve` (module docstring): serves until Ctrl-C."""
    settings = AppSettings.from_config(cfg)
    host = host or settings.host
    port = settings.port if port is None else port
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: not a port number (0-65535)")
    flask_app, ctx, made = prepare(cfg, host)
    try:
        server = make_server(host, port, flask_app, threaded=True)
    except OSError as exc:
        raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                         "choose another with --host or --port") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/" + (f"?token={ctx.token}" if ctx.token else "")
    n_gold = len(ctx.gold)
    print(f"interpret serve: {len(ctx.sample_cells)} sample cells" + (f" and {n_gold} gold cells" if n_gold else "")
          + f", answers in {ctx.store.path}{' (new)' if made else ''}", flush=True)
    print(f"interpret serve: open {url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"interpret serve: stopped; every answer sent is in {ctx.store.path}", file=sys.stderr)
    finally:
        server.server_close()


def command(args: argparse.Namespace) -> None:
    """Run `urbanmap interpret <step>` (its parser: cli.py)."""
    cfg = config.load(".", args.overrides)
    if args.step == "serve":
        serve(cfg, args.host, args.port)
    else:
        run_export(ValidationSettings.from_config(cfg), args.out)
