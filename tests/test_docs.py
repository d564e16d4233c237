"""The docs cannot drift from the tree: the module map, the flags of every command line, the links.

Reads the real tree: a module added without its line in docs/architecture.md, an import the map does not show,
a flag missing from docs/cli.md or a flag the docs name that no parser has, and a relative link to nothing all fail.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "costsens")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the command lines docs/cli.md documents, each under a heading "## `python -m <module>`"
COMMANDS = ("study.tune", "study.sweep", "study.board", "study.pretrain", "study.report", "study.predict",
            "costsens.report", "costsens.tune")
# the command lines that hand every other flag to study.tune's parser
PASS_ON = ("study.sweep", "study.board")
ROW = re.compile(r"^\| `(?P<module>(?:study|costsens)/\w+\.py)` \|(?P<job>[^|]+)\|(?P<imports>[^|]*)\|\s*$")
LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


# ---------------------------------------------------------------- the module map


def modules_on_disk() -> set[str]:
    return {f"{p.parent.name}/{p.name}" for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")}


def map_rows(text: str) -> dict[str, tuple[str, set[str]]]:
    """docs/architecture.md's table rows: module -> (its job, the project modules it imports)."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        if m := ROW.match(line):
            package = m["module"].split("/")[0]
            imports = {name if "." in name else f"{package}.{name}" for name in re.findall(r"`([\w.]+)`", m["imports"])}
            rows[m["module"]] = (m["job"].strip(), imports)
    return rows


def imports_of(path: Path) -> set[str]:
    """The project modules a file imports, at the top or inside a function (a lazy import is an arrow too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in PACKAGES:  # from study import store, engine: each name is a module
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif node.module.split(".")[0] in PACKAGES:
                found.add(node.module)
    own = f"{path.parent.name}.{path.stem}"
    return {name for name in found if name != own}


@pytest.fixture(scope="module")
def rows() -> dict[str, tuple[str, set[str]]]:
    return map_rows((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))


def test_map_row_parser_reads_a_row_and_skips_prose() -> None:
    text = "| `study/x.py` | owns x | `names`, `study.costs` |\nprose naming `study/y.py`\n| module | owns | imports |"
    assert map_rows(text) == {"study/x.py": ("owns x", {"study.names", "study.costs"})}


def test_every_module_has_a_line_and_every_line_a_module(rows: dict[str, tuple[str, set[str]]]) -> None:
    on_disk = modules_on_disk()
    assert len(on_disk) > 20  # the glob found the packages
    missing, stale = sorted(on_disk - rows.keys()), sorted(rows.keys() - on_disk)
    assert not missing, f"modules without a line in docs/architecture.md: {missing}"
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"
    assert all(job for job, _ in rows.values())


def test_every_import_arrow_is_on_the_map(rows: dict[str, tuple[str, set[str]]]) -> None:
    wrong = {}
    for module in sorted(modules_on_disk() & rows.keys()):
        real, mapped = imports_of(ROOT / module), rows[module][1]
        if real != mapped:
            wrong[module] = f"imports {sorted(real)}, the map says {sorted(mapped)}"
    assert not wrong, f"docs/architecture.md's imports column is out of date: {wrong}"


def test_study_never_imports_costsens() -> None:
    offenders = [p.name for p in (ROOT / "study").glob("*.py") if any(n.startswith("costsens") for n in imports_of(p))]
    assert offenders == []


# ---------------------------------------------------------------- the flags of every command line


class Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def parser_of(command: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The command's ``parser()``, or, where ``main`` builds its own, the parser ``main`` parses with (caught at
    its first parse call, before anything runs)."""
    module = importlib.import_module(command)
    if hasattr(module, "parser"):
        return module.parser()

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(Captured) as caught:
        module.main(["--space", "x", "--ratios", "1:2"])
    return caught.value.parser


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def cli_sections() -> dict[str, str]:
    """docs/cli.md cut at each "## `python -m <command>`" heading."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `python -m ([\w.]+)`.*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=False))


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_cli_doc_has_a_section_per_command() -> None:
    assert sorted(cli_sections()) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_documented_and_every_documented_flag_exists(command: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    flags = flags_of(parser_of(command, monkeypatch))
    assert any(f.startswith("--") for f in flags)
    section = cli_sections()[command]
    missing = sorted(f for f in flags if not mentions(section, f))
    assert not missing, f"flags of python -m {command} missing from docs/cli.md: {missing}"
    known = set(flags)
    if command in PASS_ON:  # every study.tune flag may follow a sweep's or board's own (the refused ones are named)
        known |= flags_of(parser_of("study.tune", monkeypatch))
    extra = sorted(set(LONG_FLAG.findall(section)) - known)
    assert not extra, f"docs/cli.md names flags python -m {command} does not have: {extra}"


def test_flag_check_catches_a_missing_and_an_unknown_flag() -> None:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--space")
    ap.add_argument("-v", "--verbose")
    section = "| `--space` | x |\n| `--verbose` | y |\n`--spaces`"
    assert sorted(f for f in flags_of(ap) if not mentions(section, f)) == ["-v"]
    assert set(LONG_FLAG.findall(section)) - flags_of(ap) == {"--spaces"}


# ---------------------------------------------------------------- links and length


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    # a shell comment inside a code block is no heading
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    heads = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links to nothing: {broken}"


def test_docs_folder_has_the_topics() -> None:
    topics = {"data", "spaces", "cli", "outputs", "cluster", "security", "performance", "architecture", "statistics"}
    assert topics <= {p.stem for p in (ROOT / "docs").glob("*.md")}


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the packages a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_ray_and_mlflow_stay_behind_their_doors() -> None:
    """docs/architecture.md: in study/, only engine.py and trainable.py import Ray; store.py, publish.py and
    predict.py MLflow."""
    files = sorted((ROOT / "study").glob("*.py"))
    assert sorted(p.name for p in files if "ray" in third_party_imports(p)) == ["engine.py", "trainable.py"]
    # store.py owns runs, metrics and artifacts; publish.py logs and registers a network with mlflow.pytorch and
    # predict.py loads one back from the model registry: neither goes through store's plain values
    mlflow_users = [p.name for p in files if "mlflow" in third_party_imports(p)]
    assert mlflow_users == ["predict.py", "publish.py", "store.py"]


# ---------------------------------------------------------------- the commands the docs show


COMMAND = re.compile(r"python -m ((?:study|costsens)\.\w+)([^\n]*)")


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(doc, command, argv) of every ``python -m study.x ...`` / ``costsens.x ...`` with arguments in the docs:
    the arguments end at a comment, a quote, a backtick or the next shell command."""
    found = []
    for doc in DOCS:
        for m in COMMAND.finditer(doc.read_text(encoding="utf-8")):
            rest = re.split(r"\s#|['`]|&&|;|\|", m[2])[0]
            if rest.strip():
                found.append((doc.name, m[1], rest.split()))
    return found


def test_the_docs_show_commands() -> None:
    assert {command for _, command, _ in shown_commands()} >= {"study.tune", "study.sweep", "costsens.report"}


@pytest.mark.parametrize("doc,command,argv", shown_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_command_the_docs_show_parses(doc: str, command: str, argv: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flag and value of a shown command line parses (a sweep's or board's extra flags with study.tune's
    parser)."""
    ap = parser_of(command, monkeypatch)
    tune = parser_of("study.tune", monkeypatch)
    monkeypatch.undo()
    try:
        if command in PASS_ON:
            _, rest = ap.parse_known_args(argv)
            tune.parse_args(rest)
        else:
            ap.parse_args(argv)
    except (Exception, SystemExit) as err:
        pytest.fail(f"{doc}: python -m {command} {' '.join(argv)}: {err}")
