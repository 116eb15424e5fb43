"""Reading parallel text: clear errors that name the file and line, nothing lost silently."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from aiayn.data.corpus import CorpusError, filter_pairs, read_lines, read_parallel


def test_reads_plain_and_gzipped_files_alike(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("eins\nzwei\n", encoding="utf-8")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("eins\nzwei\n")
    assert read_lines(tmp_path / "a.txt") == read_lines(tmp_path / "a.txt.gz") == ["eins", "zwei"]


def test_parallel_files_of_different_length_name_both_files_and_counts(tmp_path: Path) -> None:
    (tmp_path / "x.de").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "x.en").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        read_parallel(tmp_path / "x.de", tmp_path / "x.en")
    message = str(error.value)
    assert "x.de has 3 lines" in message and "x.en has 2 lines" in message


def test_invalid_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.de").write_bytes("gut\nschön\n".encode() + b"kaputt \xff\xfe\n")
    with pytest.raises(CorpusError, match=r"bad\.de, line 3: not valid UTF-8"):
        read_lines(tmp_path / "bad.de")


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="nowhere.de: no such file"):
        read_lines(tmp_path / "nowhere.de")
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match="broken.gz: cannot be read"):
        read_lines(tmp_path / "broken.gz")


def test_empty_and_over_long_pairs_are_skipped_and_counted() -> None:
    src = [[5, 6], [], [7], [1] * 30, [8]]
    tgt = [[9], [4], [], [2], [3] * 31]
    keep, report = filter_pairs(src, tgt, max_tokens=20, source_name="train.de")
    assert keep == [0]
    assert (report.kept, report.empty, report.too_long) == (1, 2, 2)
    assert "train.de line 2: empty" in report.examples[0]
    assert "skipped 2 with an empty side and 2 over the length limit" in str(report)
