"""BPE-dropout's cost beside SentencePiece's own encoding: the time to segment Multi30k's training
sentences (both sides) and how many more pieces p gives. The prepare step's worker rule
(aiayn.data.prepared.BPE_DROPOUT_COST) and docs/training.md quote its ratio.

    .venv/bin/python bench/bpe_dropout.py MULTI30K TOKENIZER [--p 0.1]

TOKENIZER: a tokenizer.model, e.g. RUN/tokenizer.model of a Multi30k training run.
"""
from __future__ import annotations

import argparse
import gzip
import random
import time
from pathlib import Path

from aiayn.data.bpe_dropout import BPEDropout
from aiayn.data.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multi30k", type=Path, help="a folder of Multi30k's raw files (train.en.gz, train.de.gz)")
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--p", type=float, default=0.1)
    args = parser.parse_args()
    tokenizer = Tokenizer.load(args.tokenizer)
    sentences = []
    for lang in ("en", "de"):
        with gzip.open(args.multi30k / f"train.{lang}.gz", "rt", encoding="utf-8") as lines:
            sentences += [line.rstrip("\n") for line in lines]
    started = time.perf_counter()
    plain = tokenizer.encode(sentences)
    plain_s = time.perf_counter() - started
    dropout = BPEDropout(tokenizer)
    started = time.perf_counter()
    sampled = [dropout.encode(text, args.p, random.Random(i)) for i, text in enumerate(sentences)]
    sampled_s = time.perf_counter() - started
    plain_pieces, sampled_pieces = sum(map(len, plain)), sum(map(len, sampled))
    print(f"{len(sentences):,} sentences: SentencePiece {plain_s:.2f} s, BPE-dropout {args.p} {sampled_s:.2f} s "
          f"({sampled_s / plain_s:.1f}x); pieces {plain_pieces:,} -> {sampled_pieces:,} "
          f"({sampled_pieces / plain_pieces:.3f}x)")


if __name__ == "__main__":
    main()
