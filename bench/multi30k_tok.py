"""Multi30k as the Multi30k papers trained on it, and its scores on raw text.

`write`: a copy of the raw files lowercased, punctuation-normalised and Moses-tokenised, as
multi30k/dataset's scripts/task1-tokenize.sh made its data/task1/tok/*.lc.norm.tok.* files (Wu et
al. 2021 learned their 10,000-merge BPE on those), under the raw files' names (train.en.gz, ...), so
`aiayn train --multi30k SRC-TGT --data-dir OUT` and bench/multi30k_choose.sh read it as they read
the raw folder. Entities are left unescaped (tokenizer.perl writes &apos; and &quot;).

`score`: a tokenised lowercased translation of test_2016_flickr scored both ways the issue asks:
BLEU on Moses-tokenised lowercased text (the papers'), and sacreBLEU of the Moses-detokenised
translation against the raw reference (case-insensitive, as the translation is lowercase).

    .venv/bin/python bench/multi30k_tok.py write MULTI30K OUT
    .venv/bin/python bench/multi30k_tok.py score HYP MULTI30K/test_2016_flickr.de.gz --lang de
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
from pathlib import Path

from aiayn.evaluation.bleu import bleu, tokenized_lowercased_bleu

SPLITS = ("train", "val", "test_2016_flickr")


def tokenize_lines(lines: list[str], lang: str) -> list[str]:
    """lowercase.perl | normalize-punctuation.perl -l LANG | tokenizer.perl -l LANG, unescaped."""
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [tokenizer.tokenize(normalizer.normalize(line.lower()), return_str=True, escape=False) for line in lines]


def fail(message: str) -> None:
    print(f"multi30k_tok.py: {message}", file=sys.stderr)
    sys.exit(2)


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def write(raw: Path, out: Path) -> None:
    names = sorted(p.name for p in raw.glob("*.gz") if p.name.split(".")[0] in SPLITS)
    if not names:
        fail(f"{raw}: no {{{','.join(SPLITS)}}}.LANG.gz files")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out}: exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        lang = name.split(".")[1]
        lines = tokenize_lines(read_lines(raw / name), lang)
        # Written whole, then renamed: a stopped run leaves no partial file under a real name.
        handle, staged = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(handle, "wb") as f, gzip.open(f, "wt", encoding="utf-8") as z:
            z.writelines(line + "\n" for line in lines)
        os.chmod(staged, 0o644)
        os.replace(staged, out / name)
        print(f"{out / name}: {len(lines):,} lines")


def score(hypotheses_path: Path, reference_path: Path, lang: str) -> None:
    from sacremoses import MosesDetokenizer

    hypotheses, references = read_lines(hypotheses_path), read_lines(reference_path)
    if len(hypotheses) != len(references):
        fail(f"{hypotheses_path}: {len(hypotheses):,} lines, but {reference_path} has {len(references):,}")
    tokenized = tokenized_lowercased_bleu(hypotheses, references, lang)
    detokenizer = MosesDetokenizer(lang=lang)
    raw = bleu([detokenizer.detokenize(line.split()) for line in hypotheses], references, lowercase=True)
    print(f"BLEU {tokenized.score:.2f} on Moses-tokenised, lowercased text: {tokenized.text}")
    print(f"sacreBLEU {raw.score:.2f} of the detokenised text against the raw reference: {raw.text}")
    print(f"  signature {raw.signature}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    w = verbs.add_parser("write", help="tokenised lowercased copies of the raw files")
    w.add_argument("raw", type=Path, help="folder of Multi30k's raw SPLIT.LANG.gz files")
    w.add_argument("out", type=Path, help="a new (or empty) folder")
    s = verbs.add_parser("score", help="score a tokenised lowercased translation")
    s.add_argument("hypotheses", type=Path)
    s.add_argument("reference", type=Path, help="the raw reference (.gz or plain)")
    s.add_argument("--lang", required=True, help="the target language, for Moses")
    args = parser.parse_args()
    if args.verb == "write":
        write(args.raw, args.out)
    else:
        for path in (args.hypotheses, args.reference):
            if not path.is_file():
                parser.error(f"{path}: no such file")
        score(args.hypotheses, args.reference, args.lang)


if __name__ == "__main__":
    main()
