"""Recipes as files: `--config FILE.toml` gives a training verb its flags from a TOML file.

The file's keys are the verb's long flags without their dashes (`batch-tokens = 9000`, `bf16 = true`,
`text = ["a.txt", "b.txt"]` for a flag taking several values), and an optional `verb = "train"` that
must name the verb it is given to. Every value is checked as the command line would check it (the
flag's type and choices); the values become the verb's defaults, so flags given on the command line
override them. The run folder is the user's choice on the command line: no recipe sets --out,
--resume or --overwrite."""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any

from aiayn.errors import InputError

NOT_IN_RECIPES = ("out", "resume", "overwrite", "config")


class _PreParseError(Exception):
    pass


class _PreParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _PreParseError(message)


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml",
                   help="a recipe: a TOML file of this verb's flags without their dashes (batch-tokens = 9000); "
                        "flags given on the command line override it (see recipes/)")


def config_path(arguments: list[str]) -> str | None:
    """--config's value among a verb's arguments, found before they are parsed (None: none, or the
    arguments are wrong, which parsing them will report)."""
    pre = _PreParser(add_help=False)
    pre.add_argument("--config")
    try:
        known, _ = pre.parse_known_args(arguments)
    except _PreParseError:
        return None
    return known.config


def apply_recipe(parser: argparse.ArgumentParser, verb: str, path: str) -> None:
    """Make the recipe's values `parser`'s defaults; a flag the recipe gives is no longer required."""
    values = load_recipe(path, verb, parser)
    parser.set_defaults(**values)
    for action in parser._actions:
        if action.dest in values:
            action.required = False


def load_recipe(path: str, verb: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The recipe's values by argparse destination, each checked as on the command line."""
    where = f"--config {path}"
    flags = recipe_flags(parser)
    values = {}
    for key, value in read_toml(path).items():
        if key == "verb":
            if value != verb:
                raise InputError(f"{where}: key 'verb': the recipe is for {value!r}, not for `aiayn {verb}`")
            continue
        if key in NOT_IN_RECIPES:
            raise InputError(f"{where}: key '{key}': a recipe does not set --{key}; give it on the command line "
                             "(the run folder is your choice)")
        if key not in flags:
            close = difflib.get_close_matches(key.replace("_", "-"), flags, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"{where}: key '{key}': `aiayn {verb}` has no flag --{key}{hint}")
        values[flags[key].dest] = convert(f"{where}: key '{key}'", value, flags[key])
    return values


def recipe_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The verb's flags a recipe may hold, by long name without the dashes."""
    return {option[2:]: action for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for option in action.option_strings if option.startswith("--") and option[2:] not in NOT_IN_RECIPES}


def read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise InputError(f"--config {path}: reading a recipe needs Python 3.11 or later (tomllib)") from None
    file = Path(path)
    if file.is_dir():
        raise InputError(f"--config {path}: is a folder, not a TOML file")
    try:
        with file.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise InputError(f"--config {path}: no such file") from None
    except OSError as error:
        raise InputError(f"--config {path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"--config {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"--config {path}: not valid TOML: {' '.join(str(error).split())}") from None


def convert(where: str, value: Any, action: argparse.Action) -> Any:
    """A TOML value as the flag's value: a switch takes true or false, a flag of several values a list
    (or one value), any other flag one string or number, run through the flag's type and choices."""
    if action.nargs == 0:  # store_true and the like
        if not isinstance(value, bool):
            raise InputError(f"{where}: give true or false, not {value!r}")
        return action.const if value else action.default
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise InputError(f"{where}: give at least one value")
        return [_scalar(where, item, action) for item in items]
    if isinstance(value, list):
        raise InputError(f"{where}: give one value, not a list")
    return _scalar(where, value, action)


def _scalar(where: str, value: Any, action: argparse.Action) -> Any:
    if action.type is None:
        if not isinstance(value, str):
            raise InputError(f"{where}: {value!r} is not a string (quote it)")
        converted: Any = value
    else:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(f"{where}: {value!r} is not a number")
        try:
            converted = action.type(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
            raise InputError(f"{where}: {error}") from None
    if action.choices is not None and converted not in action.choices:
        raise InputError(f"{where}: {converted!r} is not one of {', '.join(map(str, action.choices))}")
    return converted
