"""The `aiayn` command line: it parses arguments and dispatches to the package; no work is done here.

Each verb group declares its arguments and holds its handler in aiayn.commands: translation (demo,
download, prepare, train, average, plot), decoding (translate, evaluate, attention, serve), interop (export,
import), family (pretrain-mlm, train-classifier, classify, train-lm, generate, train-vit), info
(params); the options several verbs share are in aiayn.commands.options, recipes (`--config
FILE.toml`) in aiayn.commands.recipes."""
from __future__ import annotations

import argparse
import sys

from aiayn.commands import decoding, family, info, interop, translation
from aiayn.commands.options import Parser as _Parser
from aiayn.commands.recipes import apply_recipe, config_path
from aiayn.errors import InputError

# The verbs in the order `aiayn --help` lists them.
VERBS = (translation.add_demo, translation.add_download, translation.add_prepare, translation.add_train,
         decoding.add_translate, decoding.add_evaluate, decoding.add_attention, decoding.add_serve,
         interop.add_export, interop.add_import, family.add_pretrain_mlm, family.add_train_classifier,
         family.add_classify, family.add_train_lm, family.add_generate, family.add_train_vit,
         translation.add_average, translation.add_plot, info.add_params)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aiayn", description="The Transformer of 'Attention Is All You Need'.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(verbs)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments of one verb; with `--config FILE.toml`, the recipe's values are the verb's
    defaults, so flags given here override them. A bad recipe exits with status 2 and one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    verb = verb_parser(parser, argv[0]) if argv else None
    path = config_path(argv[1:]) if verb is not None and _takes_config(verb) else None
    if path is not None:
        try:
            apply_recipe(verb, argv[0], path)
        except InputError as error:
            verb.error(str(error))
    return parser.parse_args(argv)


def verb_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    """The subparser of the verb `name` (None: no such verb)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _takes_config(parser: argparse.ArgumentParser) -> bool:
    return any("--config" in action.option_strings for action in parser._actions)


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input exits with status 2 and one line naming it; a diverged training run
    with status 1; Ctrl-C with 130."""
    args = parse_args(argv)
    from aiayn.errors import TrainingDiverged
    from aiayn.runtime import bound_kernel_caches

    bound_kernel_caches()
    try:
        return args.run(args)
    except InputError as error:
        print(f"aiayn {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"aiayn {args.verb}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"aiayn {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
