"""The interpreters' web app: people label the validation sample, with quality control.

`urbanmap interpret serve` (command.py) serves it; `urbanmap interpret export` writes
their adjudicated answers as validation/human.csv, which `urbanmap validate interpret`
reads with validation.interpreter=human. store.py keeps the answers in SQLite (WAL,
committed before a page advances), quality.py holds the pure rules (double-coded cells,
agreement and Cohen's kappa, gold scores, which answer wins), inputs.py reads the sample,
the gold cells, the chips' layout and the maps, server.py holds the pages (Flask), and
templates/ and static/ their HTML, CSS and JavaScript: every asset is served by the app.
"""
