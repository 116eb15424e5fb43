"""The README's commands cannot drift from the code: every command line of its code blocks is
checked. Each `aiayn` command parses with aiayn's own parser through the path `aiayn` takes
(`aiayn.cli.main`, a recipe given with --config applied), with its verb and every flag spelled as
the verb declares it, and the verb's handler found but not run; the quick ones (`aiayn params`,
`--help`) run, and exit with status 0. The other commands are the two the README opens with,
which must be what .ci/run runs."""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aiayn import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
AIAYN = ("aiayn", ".venv/bin/aiayn")
# The README's commands that are not aiayn's: the set-up and the tests (see test_the_two_commands...).
OTHER_COMMANDS = {"bash setup.sh", ".venv/bin/python -m pytest -q"}
# Verbs that finish in well under a minute on a CPU, given no file to read.
QUICK_VERBS = {"params"}
# Placeholder paths the README uses for the reader's own files and folders.
PLACEHOLDER = re.compile(r"^(RUN|DATA|MULTI30K)(\b|[-/.])|^(corpus|valid|test)\.")
SEPARATORS = {"&&", "||", "|", ";", "&"}
REDIRECTIONS = {"<", ">", ">>", "2>", "2>>"}


def code_lines(text: str) -> list[str]:
    """The lines of the Markdown's code blocks (4-space indented, or fenced and not Python), with
    backslash continuations joined."""
    lines, fenced, fence_language, indented, previous_blank = [], False, "", False, True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, fence_language = not fenced, line.strip()[3:].strip()
            indented = False
            continue
        if fenced:
            if fence_language in ("", "sh", "bash", "console", "shell"):
                lines.append(line.strip())
            continue
        if line.startswith("    ") and (previous_blank or indented):
            indented = True
            lines.append(line.strip())
        elif line.strip():
            indented = False
        previous_blank = not line.strip()
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line
        else:
            joined.append(line)
    return [line for line in joined if line and not line.startswith("#")]


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at && | ; with redirections and comments removed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    found: list[list[str]] = [[]]
    tokens = iter(lexer)
    for token in tokens:
        if token in SEPARATORS:
            found.append([])
        elif token in REDIRECTIONS:
            next(tokens)
        else:
            found[-1].append(token)
    return [command for command in found if command]


README_COMMANDS = [command for line in code_lines(README.read_text(encoding="utf-8")) for command in commands(line)]
AIAYN_COMMANDS = [command[1:] for command in README_COMMANDS if command[0] in AIAYN]


def substituted(argv: list[str], root: Path) -> list[str]:
    """argv with the README's placeholder paths moved under `root`."""
    return [str(root / token) if PLACEHOLDER.match(token) else token for token in argv]


def declared_flags(verb: str) -> set[str]:
    parser = cli.verb_parser(cli.build_parser(), verb)
    assert parser is not None, f"`aiayn {verb}`: no such verb"
    return {option for action in parser._actions for option in action.option_strings}


def test_the_readme_is_a_front_door_and_has_commands_to_check() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "../shared" not in text
    verbs = {argv[0] for argv in AIAYN_COMMANDS}
    assert {"demo", "prepare", "train", "evaluate", "export", "serve", "params"} <= verbs


def test_the_two_commands_are_what_ci_runs() -> None:
    """The README's set-up-and-demo and test commands, and .ci/run's set-up and test commands."""
    lines = code_lines(README.read_text(encoding="utf-8"))
    assert "bash setup.sh && .venv/bin/aiayn demo" in lines
    assert ".venv/bin/python -m pytest -q" in lines
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert ci[ci.index("bash setup.sh") + 1] == ".venv/bin/python -m pytest -q"


@pytest.mark.parametrize("command", [c for c in README_COMMANDS if c[0] not in AIAYN], ids=shlex.join)
def test_every_other_command_is_one_the_test_knows(command: list[str]) -> None:
    assert shlex.join(command) in OTHER_COMMANDS, "a README command this test does not check: add it here"


@pytest.mark.parametrize("argv", AIAYN_COMMANDS, ids=shlex.join)
def test_every_aiayn_command_parses_with_its_verb_and_flags(argv: list[str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed through aiayn.cli.main (a recipe applied as `aiayn` applies it), the handler found
    and replaced before it runs; every flag spelled in full as the verb declares it (argparse
    would take a prefix)."""
    monkeypatch.chdir(ROOT)  # recipes/... are named from the repository's root
    verb, flags = argv[0], declared_flags(argv[0])
    for token in argv[1:]:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in flags, f"`aiayn {verb}` has no flag {token}"
    parsed: list[argparse.Namespace] = []
    parse_args = cli.parse_args

    def parse_without_running(arguments: list[str] | None = None) -> argparse.Namespace:
        args = parse_args(arguments)
        assert callable(args.run) and args.run.__module__.startswith("aiayn.commands.")
        parsed.append(args)
        args.run = lambda args: 0
        return args

    monkeypatch.setattr(cli, "parse_args", parse_without_running)
    try:
        status = cli.main(substituted(argv, tmp_path))
    except SystemExit as stop:  # a usage error
        pytest.fail(f"`aiayn {shlex.join(argv)}` does not parse (exit status {stop.code})")
    assert status == 0 and len(parsed) == 1 and parsed[0].verb == verb


QUICK_RUNS = ([argv for argv in AIAYN_COMMANDS if argv[0] in QUICK_VERBS or "--help" in argv]
              + [["--help"]] + [[verb, "--help"] for verb in sorted({argv[0] for argv in AIAYN_COMMANDS})])


@pytest.mark.parametrize("argv", QUICK_RUNS, ids=shlex.join)
def test_the_quick_commands_run(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "aiayn", *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_parameter_counts_the_readme_quotes() -> None:
    result = subprocess.run([sys.executable, "-m", "aiayn", "params", "--preset", "base", "--vocab-size", "37000"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "(63.1M)" in result.stdout and "63.1M" in README.read_text(encoding="utf-8")


def test_the_readme_links_and_recipes_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        if not re.match(r"[a-z]+://", link):
            assert (ROOT / link).exists(), f"README links to {link}, which is missing"
    recipes = set(re.findall(r"recipes/[\w.-]+\.toml", text))
    assert recipes
    for recipe in recipes:
        assert (ROOT / recipe).is_file(), f"README names {recipe}, which is missing"
