"""Parallel text: one sentence a line, plain or gzipped UTF-8, with errors that say where."""
from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from aiayn.errors import InputError


class CorpusError(InputError):
    """Bad input data; the message names the file (and line) at fault."""


def require_file(path: str | Path) -> Path:
    """The path, if it is a file; CorpusError saying what it is otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    return path


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines of a plain or .gz UTF-8 file, without line ends, one at a time (any size of file).

    Raises CorpusError naming the file for a missing or unreadable file and the line for invalid UTF-8.
    """
    path = require_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from _decoded(f, str(path))
    except (OSError, EOFError) as error:  # e.g. a truncated or non-gzip .gz file
        raise CorpusError(f"{path}: cannot be read ({error})") from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a plain or .gz UTF-8 file (see iter_lines)."""
    return list(iter_lines(path))


def _decoded(raw_lines: Iterable[bytes], name: str) -> Iterator[str]:
    for number, raw in enumerate(raw_lines, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise CorpusError(f"{name}, line {number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None


def decode_lines(raw_lines: Iterable[bytes], name: str) -> list[str]:
    """UTF-8 lines without line ends; CorpusError naming `name` and the line for invalid UTF-8."""
    return list(_decoded(raw_lines, name))


def iter_parallel(src_path: str | Path, tgt_path: str | Path) -> Iterator[tuple[str, str]]:
    """Line-aligned (source, target) pairs, streamed; CorpusError if the files differ in length."""
    for src, tgt in zip_longest(iter_lines(src_path), iter_lines(tgt_path)):
        if src is None or tgt is None:  # one file ended first: count both for the message
            src_lines, tgt_lines = (sum(1 for _ in iter_lines(path)) for path in (src_path, tgt_path))
            raise CorpusError(f"parallel files differ in length: {src_path} has {src_lines} lines, "
                              f"{tgt_path} has {tgt_lines} lines")
        yield src, tgt


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    """Line-aligned source and target sentences; CorpusError if the files differ in length."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise CorpusError(f"parallel files differ in length: {src_path} has {len(src)} lines, "
                          f"{tgt_path} has {len(tgt)} lines")
    return src, tgt


@dataclass
class FilterReport:
    """What `filter_pairs` kept and skipped, for the training log."""

    kept: int = 0
    empty: int = 0
    too_long: int = 0
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"kept {self.kept} pairs, skipped {self.empty} with an empty side and {self.too_long} over the length limit"


def filter_pairs(
    src_ids: list[list[int]], tgt_ids: list[list[int]], max_tokens: int, source_name: str = "corpus",
) -> tuple[list[int], FilterReport]:
    """Indices of the pairs to train on: both sides non-empty and at most max_tokens subwords."""
    report = FilterReport()
    keep = []
    for index, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or not t:
            report.empty += 1
            reason = "empty"
        elif len(s) > max_tokens or len(t) > max_tokens:
            report.too_long += 1
            reason = f"longer than {max_tokens} tokens"
        else:
            keep.append(index)
            continue
        if len(report.examples) < 3:
            report.examples.append(f"{source_name} line {index + 1}: {reason}")
    report.kept = len(keep)
    return keep, report
