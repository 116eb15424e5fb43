"""Why beam search's outputs are short, measured: for one checkpoint and a validation set, beam 4
with each length penalty alpha, with the search stopping as it does (a sentence ends when beam-size
hypotheses have ended, as in GNMT and fairseq) and with it searching until no live hypothesis can win
(the exact rule, which the length-cap bound allows). Prints sacreBLEU, brevity penalty and speed.
    .venv/bin/python bench/beam_length.py --checkpoint CKPT --src VAL.src --ref VAL.ref [--alphas 0.6 1.0 ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from unittest import mock

from aiayn.data.corpus import read_parallel
from aiayn.decoding import search
from aiayn.decoding.translator import Translator
from aiayn.evaluation.bleu import bleu
from aiayn.errors import InputError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.6, 1.0, 1.4, 1.8, 2.2])
    args = parser.parse_args()
    try:
        sources, references = read_parallel(args.src, args.ref)
        translator = Translator.from_checkpoint(args.checkpoint)
    except InputError as error:
        print(f"beam_length.py: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(sources)} sentences of {args.src}, beam {args.beam}")
    for rule in ("stops at beam-size ended", "searches until hopeless"):
        for alpha in args.alphas:
            with mock.patch.object(search, "STOP_WHEN_BEAM_SIZE_ENDED", rule.startswith("stops")):
                start = time.perf_counter()
                hypotheses = translator.translate(sources, args.beam, alpha)
                seconds = time.perf_counter() - start
            score = bleu(hypotheses, references, translator.tokenizer.lowercases)
            print(f"{rule:<26} alpha {alpha:<4g} {score.text.split(' (')[0]:<40} "
                  f"({score.text.split('(', 1)[1].split(' hyp_len')[0]}) {len(sources) / seconds:6.1f} sent/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
