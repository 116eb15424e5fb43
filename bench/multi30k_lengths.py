"""Target-to-source length ratio of each Multi30k split, in sacreBLEU's 13a words: how long the
references are for their sources. A model learns the training split's ratio; on a split whose ratio
differs, its output runs long or short, and a length penalty tuned on one split moves both alike.

    .venv/bin/python bench/multi30k_lengths.py MULTI30K [--pair en-de]
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

SPLITS = ("train", "val", "test_2016_flickr")


def words(path: Path) -> int:
    tokenize = Tokenizer13a()
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return sum(len(tokenize(line.strip()).split()) for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multi30k", type=Path, help="folder of Multi30k's raw SPLIT.LANG.gz files")
    parser.add_argument("--pair", default="en-de", help="SRC-TGT (default en-de)")
    args = parser.parse_args()
    src, _, tgt = args.pair.partition("-")
    missing = [f"{split}.{lang}.gz" for split in SPLITS for lang in (src, tgt)
               if not (args.multi30k / f"{split}.{lang}.gz").is_file()]
    if not (src and tgt) or missing:
        parser.error(f"--pair {args.pair}: give SRC-TGT" if not (src and tgt) else f"{args.multi30k}: no {missing[0]}")
    ratios = {}
    for split in SPLITS:
        source, target = words(args.multi30k / f"{split}.{src}.gz"), words(args.multi30k / f"{split}.{tgt}.gz")
        ratios[split] = target / source
        print(f"{split:17} {src} {source:7,} words  {tgt} {target:7,} words  {tgt}/{src} {ratios[split]:.4f}  "
              f"train's ratio gives {ratios['train'] / ratios[split]:.3f} of the reference length")


if __name__ == "__main__":
    main()
