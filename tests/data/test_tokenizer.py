"""The shared BPE vocabulary: raw text to raw text, byte fallback, no stray U+2581."""
from __future__ import annotations

import pytest

from aiayn.data.corpus import read_lines
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer


@pytest.fixture(scope="module")
def tokenizer(multi30k_dir) -> Tokenizer:
    de = read_lines(multi30k_dir / "val.de.gz")
    en = read_lines(multi30k_dir / "val.en.gz")
    return Tokenizer.train(de + en, vocab_size=1000)


def test_special_ids_are_the_models(tokenizer: Tokenizer) -> None:
    assert (tokenizer.processor.pad_id(), tokenizer.processor.bos_id(), tokenizer.processor.eos_id()) == (PAD_ID, BOS_ID, EOS_ID)
    assert 900 <= tokenizer.vocab_size <= 1000


def test_raw_text_round_trips_without_word_boundary_marks(tokenizer: Tokenizer, multi30k_dir) -> None:
    sentences = read_lines(multi30k_dir / "test_2016_flickr.de.gz")[:200]
    decoded = tokenizer.decode(tokenizer.encode(sentences))
    assert all("\u2581" not in s for s in decoded)
    assert decoded == [" ".join(s.split()) for s in sentences]


def test_byte_fallback_leaves_no_character_unknown(tokenizer: Tokenizer) -> None:
    # Korean never appears in the German/English training text.
    text = ["나는 학생입니다 -> I am a student ✓"]
    ids = tokenizer.encode(text)
    assert 3 not in ids[0]  # <unk>
    assert tokenizer.decode(ids) == text


def test_save_and_load_give_the_same_tokenizer(tokenizer: Tokenizer, tmp_path) -> None:
    tokenizer.save(tmp_path / "tok.model")
    again = Tokenizer.load(tmp_path / "tok.model")
    assert again.encode(["Ein Hund läuft."]) == tokenizer.encode(["Ein Hund läuft."])


def test_a_lowercasing_vocabulary_folds_case_in_use_as_in_training(multi30k_dir) -> None:
    lines = read_lines(multi30k_dir / "val.de.gz")[:300]
    lowering = Tokenizer.train(lines, vocab_size=600, lowercase=True)
    again = Tokenizer(lowering.model_proto)  # the rule travels in the model, not in a flag beside it
    assert lowering.lowercases and again.lowercases
    assert again.encode(["Ein MANN läuft."]) == again.encode(["ein mann läuft."])
    assert again.decode(again.encode(["Ein MANN läuft."])) == ["ein mann läuft."]
    pieces = lowering.pieces(list(range(4, lowering.vocab_size)))
    assert [p for p in pieces if p != p.lower() and not p.startswith("<0x")] == []  # byte pieces aside
    assert again.decode([[again.processor.piece_to_id("<0x41>")]]) == ["a"]  # a byte piece spelling "A"


def test_a_vocabulary_keeps_case_by_default(tokenizer: Tokenizer) -> None:
    assert not tokenizer.lowercases
    assert tokenizer.decode(tokenizer.encode(["Ein Mann"])) == ["Ein Mann"]
