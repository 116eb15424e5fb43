"""The `aiayn` command line: it parses arguments and dispatches to the package; no work is done here.

Each verb group declares its arguments and holds its handler in aiayn.commands: translation (demo,
prepare, train, average, plot), decoding (translate, evaluate, attention, serve), interop (export,
import), family (pretrain-mlm, train-classifier, classify, train-lm, generate, train-vit), info
(params); the options several verbs share are in aiayn.commands.options."""
from __future__ import annotations

import argparse
import sys

from aiayn.commands import decoding, family, info, interop, translation
from aiayn.commands.options import Parser as _Parser
from aiayn.errors import InputError

# The verbs in the order `aiayn --help` lists them.
VERBS = (translation.add_demo, translation.add_prepare, translation.add_train, decoding.add_translate,
         decoding.add_evaluate, decoding.add_attention, decoding.add_serve, interop.add_export, interop.add_import,
         family.add_pretrain_mlm, family.add_train_classifier, family.add_classify, family.add_train_lm,
         family.add_generate, family.add_train_vit, translation.add_average, translation.add_plot, info.add_params)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aiayn", description="The Transformer of 'Attention Is All You Need'.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input exits with status 2 and one line naming it; a diverged training run
    with status 1; Ctrl-C with 130."""
    args = build_parser().parse_args(argv)
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
