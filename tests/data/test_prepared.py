"""aiayn prepare: token arrays that decode back to the corpus, the same bytes whatever the number
of workers, idempotent, nothing left by an interrupted run, validation text kept line for line."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aiayn.data import prepared
from aiayn.data.prepared import PreparedData, PrepareOptions, prepare
from aiayn.errors import InputError
from aiayn.training.config import TrainConfig

OPTIONS = PrepareOptions(vocab_size=300, max_length=48)
QUIET = dict(log=lambda message: None)


@pytest.fixture()
def corpus(number_corpus, tmp_path: Path) -> dict[str, Path]:
    """The number words, with an empty pair and one too long, and validation text holding U+2028
    and a form feed (str.splitlines would split there)."""
    src = number_corpus["train_en"].read_text().splitlines() + ["", " ".join(["seven hundred"] * 40)]
    tgt = number_corpus["train_de"].read_text().splitlines() + ["leer", "siebenhundert"]
    paths = {name: tmp_path / name for name in ("train.en", "train.de", "valid.en", "valid.de")}
    paths["train.en"].write_text("".join(s + "\n" for s in src))
    paths["train.de"].write_text("".join(t + "\n" for t in tgt))
    paths["valid.en"].write_text("seven\u2028eight\nnine\x0cten\n")
    paths["valid.de"].write_text("sieben acht\nneun zehn\n")
    return paths


def test_the_arrays_decode_back_to_the_corpus(corpus, tmp_path: Path) -> None:
    manifest = prepare(tmp_path / "data", str(corpus["train.en"]), str(corpus["train.de"]), str(corpus["valid.en"]),
                       str(corpus["valid.de"]), OPTIONS, **QUIET)
    data = PreparedData(tmp_path / "data")
    tokenizer = data.tokenizer()
    assert manifest["train"]["skipped"] == {"empty": 1, "too_long": 1} and data.pairs == 2000
    assert manifest["train"]["id_dtype"] == "uint16" and manifest["inputs"]["train_src"]["sha256"]
    lengths = data.lengths()
    src, tgt = data.read_pairs([0, 1999])
    assert [len(s) for s in src] == lengths[[0, 1999], 0].tolist()
    lines_en = corpus["train.en"].read_text().splitlines()
    lines_de = corpus["train.de"].read_text().splitlines()
    assert tokenizer.decode([s.tolist() for s in src]) == [lines_en[0], lines_en[1999]]
    assert tokenizer.decode([t.tolist() for t in tgt]) == [lines_de[0], lines_de[1999]]
    assert data.valid_text() == (["seven\u2028eight", "nine\x0cten"], ["sieben acht", "neun zehn"])


def test_workers_change_nothing_and_a_second_run_writes_nothing(corpus, tmp_path: Path) -> None:
    args = (str(corpus["train.en"]), str(corpus["train.de"]))
    prepare(tmp_path / "one", *args, options=OPTIONS, **QUIET)
    prepare(tmp_path / "two", *args, options=PrepareOptions(vocab_size=300, max_length=48, workers=2), **QUIET)
    for name in ("tokenizer.model", "train.src.bin", "train.tgt.bin", "train.src.idx", "train.lengths.bin"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").iterdir()}
    said = []
    prepare(tmp_path / "one", *args, options=OPTIONS, log=said.append)
    assert "up to date" in said[0]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").iterdir()} == before


def test_lowercase_is_part_of_what_decides_the_data(corpus, tmp_path: Path) -> None:
    args = (str(corpus["train.en"]), str(corpus["train.de"]))
    lower = PrepareOptions(vocab_size=300, max_length=48, lowercase=True)
    manifest = prepare(tmp_path / "data", *args, options=lower, **QUIET)
    assert manifest["options"]["lowercase"] is True and "lowercase" not in OPTIONS.identity()
    assert PreparedData(tmp_path / "data").tokenizer().lowercases
    said = []
    prepare(tmp_path / "data", *args, options=lower, log=said.append)
    assert "up to date" in said[0]
    with pytest.raises(InputError, match="other inputs or options"):
        prepare(tmp_path / "data", *args, options=OPTIONS, **QUIET)


def test_moses_text_prepares_what_the_tokenised_files_would(number_corpus, tmp_path: Path) -> None:
    from aiayn.data.moses import moses_text

    english = [f'{line.capitalize()}, isn\'t it "{line}"?' for line in number_corpus["train_en"].read_text().splitlines()]
    german = [f'{line.capitalize()}: z.B. "{line}".' for line in number_corpus["train_de"].read_text().splitlines()]
    files = {"raw.en": english, "raw.de": german, "tok.en": moses_text(english, "en"), "tok.de": moses_text(german, "de"),
             "valid.en": ['Seven, isn\'t it "seven"?'], "valid.de": ['Sieben: z.B. "sieben".']}
    for name, lines in files.items():
        (tmp_path / name).write_text("".join(line + "\n" for line in lines))
    assert files["tok.en"][0] != english[0].lower()  # the Moses text differs from the raw text
    moses = dataclasses.replace(OPTIONS, moses_text=("en", "de"), workers=2)  # made Moses text in the workers too
    manifest = prepare(tmp_path / "moses", str(tmp_path / "raw.en"), str(tmp_path / "raw.de"), str(tmp_path / "valid.en"),
                       str(tmp_path / "valid.de"), moses, **QUIET)
    prepare(tmp_path / "tokenised", str(tmp_path / "tok.en"), str(tmp_path / "tok.de"), options=OPTIONS, **QUIET)
    for name in ("tokenizer.model", "train.src.bin", "train.tgt.bin", "train.src.idx", "train.tgt.idx", "train.lengths.bin"):
        assert (tmp_path / "moses" / name).read_bytes() == (tmp_path / "tokenised" / name).read_bytes(), name
    assert manifest["options"]["moses_text"] == ["en", "de"] and "moses_text" not in OPTIONS.identity()
    assert PreparedData(tmp_path / "moses").valid_text() == (files["valid.en"], files["valid.de"])  # kept raw
    with pytest.raises(InputError, match="other inputs or options"):
        prepare(tmp_path / "moses", str(tmp_path / "raw.en"), str(tmp_path / "raw.de"), str(tmp_path / "valid.en"),
                str(tmp_path / "valid.de"), OPTIONS, **QUIET)
    with pytest.raises(InputError, match="no rules for language 'xx'"):
        dataclasses.replace(OPTIONS, moses_text=("en", "xx"))


def test_bpe_dropout_writes_each_pair_once_per_segmentation_whatever_the_workers(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = (str(corpus["train.en"]), str(corpus["train.de"]))
    sampled = PrepareOptions(vocab_size=300, max_length=48, bpe_dropout=0.2, segmentations=3)
    manifest = prepare(tmp_path / "one", *args, options=sampled, **QUIET)  # one chunk a copy, in this process
    monkeypatch.setattr(prepared, "CHUNK_PAIRS", 300)  # several chunks, shared out among the workers
    prepare(tmp_path / "two", *args, options=dataclasses.replace(sampled, workers=2), **QUIET)
    for name in ("train.src.bin", "train.tgt.bin", "train.src.idx", "train.tgt.idx", "train.lengths.bin"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    data = PreparedData(tmp_path / "one")
    tokenizer = data.tokenizer()
    assert data.pairs == 3 * 2000 and manifest["train"]["skipped"]["empty"] == 3
    assert manifest["options"]["bpe_dropout"] == 0.2 and manifest["options"]["segmentations"] == 3
    copies = [data.read_pairs([copy * 2000 + 7, copy * 2000 + 1999]) for copy in range(3)]
    lines = {side: corpus[f"train.{side}"].read_text().splitlines() for side in ("en", "de")}
    texts = [lines["en"][7], lines["en"][1999], lines["de"][7], lines["de"][1999]]
    for src, tgt in copies:  # every copy holds the same text
        assert tokenizer.decode([ids.tolist() for ids in src + tgt]) == texts
    segmentations = {tuple(np.concatenate(src + tgt).tolist()) for src, tgt in copies}
    plain = tuple(i for ids in tokenizer.encode(texts) for i in ids)
    assert len(segmentations) == 3 and plain not in segmentations
    with pytest.raises(InputError, match="other inputs or options"):  # the options decide the data
        prepare(tmp_path / "one", *args, options=dataclasses.replace(sampled, bpe_dropout=0.1), **QUIET)


@pytest.mark.parametrize("options", [PrepareOptions, functools.partial(TrainConfig, max_steps=1)],
                         ids=["prepare", "a run that prepares"])
def test_bpe_dropout_options_are_checked(options: Callable[..., object]) -> None:
    with pytest.raises(InputError, match="bpe_dropout"):
        options(bpe_dropout=1.0)
    with pytest.raises(InputError, match="needs bpe_dropout"):
        options(segmentations=2)
    with pytest.raises(InputError, match="at most 1000"):
        options(bpe_dropout=0.1, segmentations=1001)
    assert "bpe_dropout" not in OPTIONS.identity()


def test_an_interrupted_prepare_leaves_nothing(corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepared, "_copy_valid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "data", str(corpus["train.en"]), str(corpus["train.de"]), str(corpus["valid.en"]),
                str(corpus["valid.de"]), OPTIONS, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(corpus_name.name for corpus_name in corpus.values())


def test_the_leftover_of_a_killed_prepare_is_removed(corpus, tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    assert not os.path.exists(f"/proc/{dead}")
    leftover = tmp_path / f".data.partial-{dead}-abcd"
    (leftover / "junk").mkdir(parents=True)
    prepare(tmp_path / "data", str(corpus["train.en"]), str(corpus["train.de"]), options=OPTIONS, **QUIET)
    assert not leftover.exists() and (tmp_path / "data" / "manifest.json").is_file()


def test_a_damaged_folder_is_not_taken_for_prepared_data(corpus, tmp_path: Path) -> None:
    prepare(tmp_path / "data", str(corpus["train.en"]), str(corpus["train.de"]), options=OPTIONS, **QUIET)
    with open(tmp_path / "data" / "train.tgt.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ValueError, match="train.tgt.bin"):
        PreparedData(tmp_path / "data")
    (tmp_path / "data" / "manifest.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="manifest.json"):
        PreparedData(tmp_path / "data")


def test_lengths_keep_room_for_eos_in_their_type(corpus, tmp_path: Path) -> None:
    # Training adds </s> or <s> to each length: 65,535 would wrap to 0 in uint16.
    for max_length, dtype in ((2**16 - 2, "uint16"), (2**16 - 1, "uint32")):
        manifest = prepare(tmp_path / str(max_length), str(corpus["train.en"]), str(corpus["train.de"]),
                           options=PrepareOptions(vocab_size=300, max_length=max_length), **QUIET)
        assert manifest["train"]["length_dtype"] == dtype
        assert np.iinfo(PreparedData(tmp_path / str(max_length)).lengths().dtype).max >= max_length + 1
