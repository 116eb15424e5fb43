"""BPE-dropout (Provilkov et al., ACL 2020): the training text segmented with some merges left out.

BPE segments a word by repeatedly merging the adjacent pair of symbols whose merge ranks highest.
BPE-dropout drops each possible merge of a step with probability p, so the same word is split
into different, mostly smaller pieces of the same vocabulary from one copy of the data to the next;
the model learns how words are composed. Translation at test time uses the ordinary segmentation
(p = 0).

SentencePiece samples segmentations too (`enable_sampling`), but its generator is seeded once per
thread, not per call, so prepared data would depend on the order work reached each process; and
it drops a merge for good once skipped, where the paper draws every possible merge again at every
step. This is the paper's algorithm over a SentencePiece BPE vocabulary (without user-defined
symbols, which `aiayn prepare` never makes; with byte fallback), drawing from the generator it is given. With p = 0 it equals
SentencePiece's own encoding (tests/data/test_bpe_dropout.py checks it on Multi30k).
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from aiayn.errors import InputError

if TYPE_CHECKING:  # the options below are checked where the CLI parses: without SentencePiece
    from aiayn.data.tokenizer import Tokenizer

WORD_START = "\u2581"  # SentencePiece's word-boundary mark: every word begins with it
# Each merge step rescans the word: the time grows with the square of its length. A line with a
# longer word (a URL, a long number) keeps SentencePiece's own segmentation.
LONGEST_WORD = 200
MOST_SEGMENTATIONS = 1000  # copies of the corpus: its pairs, disk and the lengths in memory grow K-fold


def check_options(bpe_dropout: float, segmentations: int) -> None:
    """Refuses a merge-drop probability outside [0, 1) and copies that cannot differ or are too many."""
    if not 0.0 <= bpe_dropout < 1.0:
        raise InputError(f"bpe_dropout must be in [0, 1), got {bpe_dropout}")
    if segmentations > MOST_SEGMENTATIONS:
        raise InputError(f"segmentations must be at most {MOST_SEGMENTATIONS}, got {segmentations}")
    if segmentations > 1 and not bpe_dropout:
        raise InputError(f"segmentations {segmentations} needs bpe_dropout above 0 (--bpe-dropout): "
                         "without it every copy would be the same")


class BPEDropout:
    """A SentencePiece BPE vocabulary's segmentation, with each merge dropped with probability p."""

    def __init__(self, tokenizer: Tokenizer):
        processor = tokenizer.processor
        if not processor.is_byte(processor.piece_to_id("<0x00>")):
            raise ValueError("BPE-dropout: the vocabulary has no byte fallback")
        self._encode_plain = processor.encode
        self._normalize = processor.normalize
        self._id: dict[str, int] = {}
        self._score: dict[str, float] = {}  # a merged piece's rank: the higher, the earlier BPE merges it
        for i in range(processor.get_piece_size()):
            if processor.is_unused(i):  # SentencePiece merges through them and splits them again
                raise ValueError(f"BPE-dropout: the vocabulary has an unused piece ({processor.id_to_piece(i)})")
            if processor.is_control(i) or processor.is_unknown(i) or processor.is_byte(i):
                continue
            piece = processor.id_to_piece(i)
            self._id[piece] = i
            self._score[piece] = processor.get_score(i)
        self._byte_id = [processor.piece_to_id(f"<0x{b:02X}>") for b in range(256)]

    def encode(self, text: str, p: float, rng: random.Random) -> list[int]:
        """The text's ids, every possible merge dropped with probability p (drawn from rng)."""
        if not 0 <= p < 1:
            raise ValueError(f"BPE-dropout must be in [0, 1), got {p}")
        # Merges never cross a word boundary: a piece holds the mark only at its start. The text
        # may hold marks of its own ("a ▁b" is "▁a▁▁b": three words, one a lone mark).
        first, *rest = self._normalize(text).split(WORD_START)
        words = ([first] if first else []) + [WORD_START + word for word in rest]
        if any(len(word) > LONGEST_WORD for word in words):
            return self._encode_plain(text)
        return [i for word in words for i in self._ids(self._segment(word, p, rng))]

    def _segment(self, word: str, p: float, rng: random.Random) -> list[str]:
        """BPE on one word: merge the highest-ranked adjacent pair (the leftmost of equals) among
        those not dropped at this step, until none is left."""
        symbols = list(word)
        score = self._score
        while len(symbols) > 1:
            best, best_score = -1, 0.0
            for k in range(len(symbols) - 1):
                merged_score = score.get(symbols[k] + symbols[k + 1])
                if merged_score is None or (p and rng.random() < p):
                    continue
                if best < 0 or merged_score > best_score:
                    best, best_score = k, merged_score
            if best < 0:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        return symbols

    def _ids(self, symbols: list[str]) -> list[int]:
        """Pieces to ids; a character outside the vocabulary becomes its UTF-8 bytes (byte fallback)."""
        ids = []
        for symbol in symbols:
            piece_id = self._id.get(symbol)
            if piece_id is None:
                ids += [self._byte_id[b] for b in symbol.encode("utf-8")]
            else:
                ids.append(piece_id)
        return ids
