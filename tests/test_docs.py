"""The README and docs/ name only what exists: every `urbanmap ...` command (and
`urbanmap validate <step>`), every `make <target>`, every config key written as a dotted
key (`mosaic.block_cells`) or an override (`data=mexico`, `-S cv=spatial`) in code spans
and code blocks; every relative link leads to a file; and mkdocs.yml's nav lists every
page of docs/, with a theme that fetches nothing from the internet.

The site itself is built by `make docs` (mkdocs build --strict), not here.
"""

from __future__ import annotations

import argparse
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from urbanmap import cli
from urbanmap.core.config import compose

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CONF = REPO / "conf"

#: A dotted name whose later part is one of these is a file (`mosaic.tif`, `predict.py`,
#: `labels.parquet.dvc`), not a config key.
FILE_EXTENSIONS = {
    "csv", "db", "dvc", "gpkg", "gz", "html", "json", "lock", "md", "npz", "parquet", "png", "py",
    "tif", "tiff", "toml", "txt", "xml", "yaml", "yml", "zip",
}

FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[^\n]*\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$", re.M | re.S)
SPAN = re.compile(r"`(?P<code>[^`]+)`")
#: `urbanmap <command> [<step>]`, not `src/urbanmap/...`, `python -m urbanmap.x`, `urbanmap-<region>`
#: or a URL ending in /urbanmap.
COMMAND = re.compile(r"(?<![\w/.@:+~-])urbanmap[ \t]+(?P<command>[A-Za-z_][\w-]*)(?:[ \t]+(?P<step>[A-Za-z_][\w-]*)(?![\w=.]))?")
MAKE = re.compile(r"(?<![\w/.-])make[ \t]+(?P<target>[A-Za-z_][\w-]*)(?![\w.=/])")
#: A dotted name: `mosaic.block_cells`, `data.imagery.source`; not `..boundary` (an
#: interpolation relative to its node) nor the tail of a path or module.
DOTTED = re.compile(r"(?<![\w/.$+~-])(?P<key>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?![\w/(-])")
#: `group=option[,option|option]`: a config group swapped (`data=mexico`, `model=extra_trees,lenet`).
GROUP = re.compile(r"(?<![\w/.$+~-])(?P<group>[A-Za-z_]\w*)=(?P<options>[A-Za-z_][\w]*(?:[,|][A-Za-z_]\w*)*)(?![\w.])")
#: The overrides of a command line: `urbanmap <stage> key=value ...` and `dvc exp run -S key=value`.
#: A placeholder value (`key=value`, `a.b=value`, `period=<YYYY>`) makes the key a placeholder too.
OVERRIDE = re.compile(r"(?:^|\s)(?P<key>[A-Za-z_][\w.]*)=(?!value\b|<|\.\.\.)")
DVC_SET = re.compile(r"(?:^|\s)(?:-S|--set-param)[ \t]+['\"]?(?P<key>[A-Za-z_][\w.]*)=(?!value\b|<|\.\.\.)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")


@dataclass(frozen=True)
class Known:
    """What exists: CLI commands (-> their steps), config keys, config groups (-> options),
    make targets."""

    commands: dict[str, frozenset[str]]
    keys: frozenset[str]
    groups: dict[str, frozenset[str]]
    make_targets: frozenset[str]

    @property
    def top(self) -> frozenset[str]:
        return frozenset(k for k in self.keys if "." not in k)


def _flatten(node, prefix: str, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.add(key)
            _flatten(v, key, out)


def _cli_commands() -> dict[str, frozenset[str]]:
    """Command -> its steps (empty when it takes none), read from the CLI's own parser."""
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, p in sub.choices.items():
        steps = next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)
        out[name] = frozenset(steps.choices) if steps else frozenset()
    return out


def _make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(m.group(1) for m in re.finditer(r"^([A-Za-z_][\w-]*)[ \t]*:(?!=)", text, re.M))


@functools.cache
def known() -> Known:
    keys: set[str] = set()
    _flatten(OmegaConf.to_container(compose(CONF)), "", keys)
    groups = {}
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir()):
        options = sorted(folder.glob("*.yaml"))
        groups[folder.name] = frozenset(p.stem for p in options)
        for option in options:  # keys of every option, not only the default's (model.net.* in model=lenet)
            keys.add(folder.name)
            _flatten(yaml.safe_load(option.read_text()) or {}, folder.name, keys)
    return Known(_cli_commands(), frozenset(keys), groups, _make_targets())


def code_chunks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every code-block line and every inline code span."""
    chunks = []
    masked = text
    for m in FENCE.finditer(text):
        first = text.count("\n", 0, m.start("body")) + 1
        chunks += [(first + i, line) for i, line in enumerate(m.group("body").splitlines())]
        masked = masked[: m.start()] + re.sub(r"[^\n]", " ", m.group(0)) + masked[m.end():]
    for m in SPAN.finditer(masked):
        chunks.append((masked.count("\n", 0, m.start()) + 1, re.sub(r"\s+", " ", m.group("code"))))
    return sorted(chunks)


def _is_file_name(dotted: str) -> bool:
    return any(part.lower() in FILE_EXTENSIONS for part in dotted.split(".")[1:])


def problems(text: str, where: str, k: Known | None = None) -> tuple[list[str], int]:
    """Unknown commands, make targets, config keys and group options named in the code of a
    Markdown `text`, as 'where:line: ...', and how many names were checked."""
    k = k or known()
    found: list[str] = []
    checked = 0
    for line, code in code_chunks(text):
        for m in COMMAND.finditer(code):
            checked += 1
            command, step = m.group("command"), m.group("step")
            if command not in k.commands:
                found.append(f"{where}:{line}: unknown command `urbanmap {command}` (commands: {', '.join(sorted(k.commands))})")
            elif k.commands[command] and step and step not in k.commands[command]:
                found.append(f"{where}:{line}: unknown step `urbanmap {command} {step}` "
                             f"(steps: {', '.join(sorted(k.commands[command]))})")
            # the overrides on that command line: each must start with a top-level key
            rest = code[m.end():].split("#")[0].split("&&")[0].split(";")[0]
            for o in OVERRIDE.finditer(rest):
                checked += 1
                if o.group("key").split(".")[0] not in k.top:
                    found.append(f"{where}:{line}: unknown config key `{o.group('key')}` in an override")
        for m in DVC_SET.finditer(code):
            checked += 1
            if m.group("key").split(".")[0] not in k.top:
                found.append(f"{where}:{line}: unknown config key `{m.group('key')}` in `-S`")
        for m in MAKE.finditer(code):
            checked += 1
            if m.group("target") not in k.make_targets:
                found.append(f"{where}:{line}: unknown make target `make {m.group('target')}`")
        for m in DOTTED.finditer(code):
            key = m.group("key")
            if key.split(".")[0] not in k.top or _is_file_name(key):
                continue
            checked += 1
            if key not in k.keys:
                found.append(f"{where}:{line}: unknown config key `{key}`")
        for m in GROUP.finditer(code):
            group = m.group("group")
            if group not in k.groups:
                continue
            for option in re.split(r"[,|]", m.group("options")):
                checked += 1
                if option not in k.groups[group]:
                    found.append(f"{where}:{line}: unknown option `{group}={option}` "
                                 f"(conf/{group}/: {', '.join(sorted(k.groups[group]))})")
    return found, checked


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_docs_exist():
    assert (DOCS / "index.md").is_file()
    assert len(pages()) > 5


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_and_config_key_named_exists(page):
    found, _ = problems(page.read_text(encoding="utf-8"), page.relative_to(REPO).as_posix())
    assert found == []


def test_the_checker_sees_the_commands_and_keys_of_the_docs():
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages())
    commands = {(m.group("command"), m.group("step")) for _, code in code_chunks(text) for m in COMMAND.finditer(code)}
    assert {("grid", None), ("plan", None), ("validate", "sample"), ("validate", "estimate"), ("params", None)} <= commands
    keys = {m.group("key") for _, code in code_chunks(text) for m in DOTTED.finditer(code)}
    assert {"mosaic.block_cells", "data.imagery.source", "compute.tile_size", "labels.rule"} <= keys
    _, checked = problems(text, "all")
    assert checked > 200, checked  # the checker still reads the docs' code


PLANTED = """\
Run `urbanmap grid data=mexico`, then `urbanmap frobnicate` and `urbanmap validate guess`;
`urbanmap validate <step>` and `python -m urbanmap.examples.byo` are fine.

```bash
urbanmap mosaic period=2019 mosaic.blok_cells=4 compute=dask compute.address=tcp://x:8786
dvc exp run -S model=lenett -S modle.x=1 -S model.trainer.max_epochs=3
make run && make tset
dvc get https://example.org/nso/urbanmap data/valle_de_mexico/labels.parquet
```

Keys: `mosaic.block_cells`, `patches.n_per_clas`, `data=atlantis`, `cv=kfold|spatial`;
files: `mosaic.tif`, `src/urbanmap/mapping/predict.py`, `labels.parquet.dvc`, `plan.json`.
"""


def test_a_planted_unknown_command_key_option_and_target_are_reported():
    found, _ = problems(PLANTED, "planted.md")
    text = "\n".join(found)
    for bad in ("`urbanmap frobnicate`", "`urbanmap validate guess`", "`mosaic.blok_cells`", "`model=lenett`",
                "`modle.x`", "`make tset`", "`patches.n_per_clas`", "`data=atlantis`"):
        assert bad in text, f"{bad} not reported in:\n{text}"
    assert len(found) == 8, text
    assert "planted.md:1:" in text and "planted.md:5:" in text  # where: file and line


def _nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            out += _nav_pages(value)
        elif not re.match(r"\w+://", value):
            out.append(value)
    return out


class _Loader(yaml.SafeLoader):
    """mkdocs.yml may hold tags such as !!python/name: (read as None here)."""


_Loader.add_multi_constructor("", lambda loader, suffix, node: None)


def _mkdocs() -> dict:
    return yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_Loader)


def test_mkdocs_nav_lists_every_page_and_nothing_else():
    config = _mkdocs()
    docs_dir = REPO / config.get("docs_dir", "docs")
    listed = _nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    missing = [p for p in listed if not (docs_dir / p).is_file()]
    assert missing == [], f"nav entries without a page: {missing}"
    pages_ = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md"))
    assert sorted(listed) == pages_, f"pages not in mkdocs.yml's nav: {sorted(set(pages_) - set(listed))}"


def test_the_site_fetches_nothing_from_the_internet():
    config = _mkdocs()
    assert config["theme"]["name"] == "material"
    assert config["theme"].get("font") is False, "Material loads Google Fonts unless theme.font is false"
    assert config.get("strict") is True
    external = [a for key in ("extra_css", "extra_javascript") for a in config.get(key) or []
                if re.match(r"(https?:)?//", a if isinstance(a, str) else a.get("path", ""))]
    assert external == []
    assert not config.get("plugins") or set(p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]) <= {"search"}


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_leads_to_a_file(page):
    text = page.read_text(encoding="utf-8")
    masked = FENCE.sub("", text)
    broken = []
    for m in LINK.finditer(masked):
        target = m.group("target").split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue
        if not (page.parent / target).exists():
            broken.append(m.group("target"))
    assert broken == []
