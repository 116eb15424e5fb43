"""Multi30k as the Multi30k papers trained on it, and its scores on raw text.

`write`: a copy of the raw files lowercased, punctuation-normalised and Moses-tokenised, as
multi30k/dataset's scripts/task1-tokenize.sh made its data/task1/tok/*.lc.norm.tok.* files (Wu et
al. 2021 learned their 10,000-merge BPE on those), under the raw files' names (train.en.gz, ...), so
`aiayn train --multi30k SRC-TGT --data-dir OUT` and bench/multi30k_choose.sh read it as they read
the raw folder. Entities are left unescaped (tokenizer.perl writes &apos; and &quot;). `aiayn train
--moses-text` makes the same text from the raw files itself (aiayn.data.prepared); `write` is how
runs 7 to 9 of docs/results/multi30k_en_de.md got it.

`score`: a tokenised lowercased translation scored both ways the issue asks: BLEU on Moses-tokenised
lowercased text (the papers': against the reference made as `write` makes it), and sacreBLEU of the
Moses-detokenised translation against the raw reference (case-insensitive: the translation is lowercase).
`--plain`: the translation is plain text (a model trained with `aiayn train --moses-text` writes
it), made into the papers' text first.

    .venv/bin/python bench/multi30k_tok.py write MULTI30K OUT
    .venv/bin/python bench/multi30k_tok.py score HYP MULTI30K/test_2016_flickr.de.gz --lang de [--plain]
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path
from typing import NoReturn

from aiayn.data.corpus import read_lines
from aiayn.data.moses import moses_detokenize, moses_text
from aiayn.errors import InputError
from aiayn.evaluation.bleu import bleu
from aiayn.files import building, check_output_dir

SPLITS = ("train", "val", "test_2016_flickr")


def fail(message: str) -> NoReturn:
    print(f"multi30k_tok.py: {message}", file=sys.stderr)
    sys.exit(2)


def write(raw: Path, out: Path) -> None:
    """The tokenised copies, built in a hidden folder beside OUT and renamed into place when all are
    written: OUT holds every file or none."""
    names = sorted(p.name for p in raw.glob("*.gz") if p.name.split(".")[0] in SPLITS)
    if not names:
        fail(f"{raw}: no {{{','.join(SPLITS)}}}.LANG.gz files")
    try:
        check_output_dir(out, "tokenised copy", owned=lambda path: False)
        with building(out) as staged:
            lines_of_split: dict[str, tuple[str, int]] = {}
            for name in names:
                lines = moses_text(read_lines(raw / name), name.split(".")[1])
                split = name.split(".")[0]
                first = lines_of_split.setdefault(split, (name, len(lines)))
                if first[1] != len(lines):  # the languages of a split are line-aligned translations
                    fail(f"{raw / name}: {len(lines):,} lines, but {first[0]} has {first[1]:,}")
                with gzip.open(staged / name, "wt", encoding="utf-8") as f:
                    f.writelines(line + "\n" for line in lines)
                print(f"{out / name}: {len(lines):,} lines")
    except InputError as error:
        fail(str(error))
    except OSError as error:  # OUT's parent is a file, or cannot be written
        fail(f"{out}: cannot be written ({error.strerror or error})")


def score(hypotheses_path: Path, reference_path: Path, lang: str, plain: bool = False) -> None:
    """The papers' BLEU compares the translation, tokenised and lowercase as the model writes it (or
    made so, if `plain`), with the reference made the same way (moses_text); sacreBLEU detokenises
    the translation."""
    from sacrebleu.metrics import BLEU

    try:
        hypotheses, references = read_lines(hypotheses_path), read_lines(reference_path)
    except InputError as error:
        fail(str(error))
    if plain:
        hypotheses = moses_text(hypotheses, lang)
    if len(hypotheses) != len(references):
        fail(f"{hypotheses_path}: {len(hypotheses):,} lines, but {reference_path} has {len(references):,}")
    metric = BLEU(tokenize="none", force=True)
    tokenized = metric.corpus_score(hypotheses, [moses_text(references, lang)])
    raw = bleu(moses_detokenize(hypotheses, lang), references, lowercase=True)
    print(f"BLEU {tokenized.score:.2f} on Moses-tokenised, lowercased text: {tokenized}")
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
    s.add_argument("--plain", action="store_true", help="the translation is plain text: tokenised first")
    args = parser.parse_args()
    if args.verb == "write":
        write(args.raw, args.out)
    else:
        score(args.hypotheses, args.reference, args.lang, args.plain)


if __name__ == "__main__":
    main()
