"""Facts about the model: params (a preset's parameter count beside the paper's Table 3)."""
from __future__ import annotations

import argparse

from aiayn.commands.options import number
from aiayn.model.config import ModelConfig


def add_params(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("params", help="print the parameter count of a preset, per component")
    p.add_argument("--preset", default="base", choices=sorted(ModelConfig.PRESETS))
    p.add_argument("--vocab-size", type=number(int, 3, 10_000_000), default=37000,
                   help="shared vocabulary size (paper: 37000 BPE)")
    p.set_defaults(run=_params)


def _params(args: argparse.Namespace) -> int:
    import torch

    from aiayn.model import Transformer, parameter_counts

    config = ModelConfig.preset(args.preset, vocab_size=args.vocab_size)
    with torch.device("meta"):  # shapes only: no memory, whatever the size
        counts = parameter_counts(Transformer(config))
    print(f"preset {args.preset}: d_model {config.d_model}, heads {config.n_heads}, d_ff {config.d_ff}, "
          f"layers {config.n_encoder_layers}+{config.n_decoder_layers}, vocabulary {config.vocab_size} "
          f"(shared embeddings: {config.share_embeddings})")
    for name, value in counts.items():
        print(f"{name:>12}: {value:>13,}  ({value / 1e6:.1f}M)")
    paper = ModelConfig.PAPER_PARAMETERS.get(args.preset)
    if paper:
        print(f"{'paper':>12}: {paper / 1e6:.0f}M (Table 3); difference {100 * (counts['total'] - paper) / paper:+.1f}%")
    return 0
