"""The `aiayn` command line: it parses arguments and dispatches to the package; no work is done here."""
from __future__ import annotations

import argparse
import sys

from aiayn.model.config import ModelConfig


def _params(args: argparse.Namespace) -> int:
    from aiayn.model import Transformer, parameter_counts

    config = ModelConfig.preset(args.preset, vocab_size=args.vocab_size)
    counts = parameter_counts(Transformer(config))
    print(f"preset {args.preset}: d_model {config.d_model}, heads {config.n_heads}, d_ff {config.d_ff}, "
          f"layers {config.n_encoder_layers}+{config.n_decoder_layers}, vocabulary {config.vocab_size} (shared embeddings: {config.share_embeddings})")
    for name, value in counts.items():
        print(f"{name:>12}: {value:>13,}  ({value / 1e6:.1f}M)")
    paper = ModelConfig.PAPER_PARAMETERS.get(args.preset)
    if paper:
        print(f"{'paper':>12}: {paper / 1e6:.0f}M (Table 3); difference {100 * (counts['total'] - paper) / paper:+.1f}%")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiayn", description="The Transformer of 'Attention Is All You Need'.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    params = verbs.add_parser("params", help="print the parameter count of a preset, per component")
    params.add_argument("--preset", default="base", choices=sorted(ModelConfig.PRESETS))
    params.add_argument("--vocab-size", type=int, default=37000, help="shared vocabulary size (paper: 37000 BPE)")
    params.set_defaults(run=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
