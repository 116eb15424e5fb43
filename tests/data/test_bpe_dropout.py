"""BPE-dropout: at p = 0 exactly SentencePiece's segmentation; above it, other segmentations of the
same text from the same vocabulary, the same for the same seed, and more pieces as p grows."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from aiayn.data.bpe_dropout import BPEDropout
from aiayn.data.tokenizer import Tokenizer

# Characters outside the vocabulary (byte fallback), runs of spaces, an empty line, repeated pairs.
ODD_LINES = ["", "   ", "Ω ½ 漢字 x", "aaaa aaaaaa", "Ein  Mann,  der -- \"lacht\"!", "T-Shirt's 3,5 m²",
             "a \u2581b", "\u2581\u2581 x\u2581y \u2581"]  # the word mark itself in the text


def _encode(dropout: BPEDropout, texts: list[str], p: float, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [dropout.encode(text, p, rng) for text in texts]


def _sentences(multi30k_dir: Path, n: int) -> list[str]:
    lines = []
    for lang in ("en", "de"):
        with gzip.open(multi30k_dir / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            lines += [next(f).rstrip("\n") for _ in range(n)]
    return lines


@pytest.fixture(scope="module", params=[False, True], ids=["cased", "lowercase"])
def vocabulary(request, multi30k_dir: Path) -> tuple[Tokenizer, list[str]]:
    sentences = _sentences(multi30k_dir, 1000)
    return Tokenizer.train(iter(sentences), 1000, lowercase=request.param), sentences + ODD_LINES


def test_without_dropout_it_is_sentencepieces_own_segmentation(vocabulary) -> None:
    tokenizer, sentences = vocabulary
    assert _encode(BPEDropout(tokenizer), sentences, 0.0, 1) == tokenizer.encode(sentences)


def test_dropout_gives_other_segmentations_of_the_same_text(vocabulary) -> None:
    tokenizer, sentences = vocabulary
    dropout = BPEDropout(tokenizer)
    plain = tokenizer.encode(sentences)
    sampled = _encode(dropout, sentences, 0.1, 1)
    assert tokenizer.decode(sampled) == tokenizer.decode(plain)
    assert sampled != plain
    assert _encode(dropout, sentences, 0.1, 1) == sampled
    assert _encode(dropout, sentences, 0.1, 2) != sampled
    lengths = [sum(map(len, _encode(dropout, sentences, p, 1))) for p in (0.0, 0.1, 0.3)]
    assert lengths[0] < lengths[1] < lengths[2]


def test_a_probability_outside_0_to_1_is_refused(vocabulary) -> None:
    dropout = BPEDropout(vocabulary[0])
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="BPE-dropout"):
            dropout.encode("a", p, random.Random(1))


def test_a_line_with_a_very_long_word_keeps_its_plain_segmentation(vocabulary) -> None:
    tokenizer, _ = vocabulary
    line = "see " + "ab" * 150 + " here"  # segmenting a 300-character word would take its square in steps
    assert BPEDropout(tokenizer).encode(line, 0.5, random.Random(1)) == tokenizer.encode([line])[0]
