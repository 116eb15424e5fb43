"""A parallel corpus of any size, prepared once into token-id arrays on disk (§5.1 at WMT scale).

`prepare` learns the shared SentencePiece vocabulary on a bounded random sample of the corpus
(SentencePiece's own sampling: the corpus streams through it, never held whole), encodes the text
in parallel worker processes, and writes flat arrays that training reads pair by pair:

    DATA/manifest.json          format, inputs (path, size, sha256), options, counts, skipped pairs
                                by reason; written last: a folder without it is not prepared data
    DATA/tokenizer.model        the SentencePiece model (pad 0, <s> 1, </s> 2, <unk> 3, byte fallback)
    DATA/train.src.bin          source token ids of every kept pair, concatenated, no </s>
    DATA/train.tgt.bin          target token ids, likewise (uint16 when the vocabulary fits, else uint32)
    DATA/train.src.idx          int64 offsets: pair i's source ids are bin[idx[i]:idx[i+1]] (pairs + 1 entries)
    DATA/train.tgt.idx          likewise for the target
    DATA/train.lengths.bin      [pairs, 2] source and target lengths (uint16, or uint32 past 65,535)
    DATA/valid.src.txt, valid.tgt.txt   the validation text as given (raw: BLEU is scored on raw text)

With `moses_text` (source and target languages), the training text is made into the Multi30k papers'
text first, lowercased, punctuation-normalised and Moses-tokenised (aiayn.data.moses), and the
vocabulary is learned on that; the validation text stays raw, and a model trained on it is given
raw text and writes plain text (aiayn.decoding.translator).

With BPE-dropout (`bpe_dropout`, `segmentations` K), the training pairs are written K times, each
time segmented anew (aiayn.data.bpe_dropout), one copy after the other: training shuffles them all.
All files are little-endian raw arrays (numpy.fromfile / numpy.memmap with the manifest's dtypes).
DATA is built in a hidden sibling folder and renamed into place when complete, so an interrupted
`prepare` leaves nothing that `train` would accept. Training keeps only the lengths in memory
(4 bytes a pair) and reads each batch's ids from the files as it needs them.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from aiayn.data.bpe_dropout import BPEDropout, check_options as check_bpe_dropout
from aiayn.data.corpus import CorpusError, iter_parallel, read_lines, require_file
from aiayn.data.moses import check_language, moses_text
from aiayn.data.tokenizer import Tokenizer
from aiayn.errors import InputError
from aiayn.files import building, check_output_dir, holds_only, write_atomic

FORMAT, VERSION = "aiayn-prepared-data", 1
CHUNK_PAIRS = 20_000  # pairs per task sent to a worker process
SMALL_INPUT_BYTES = 20 * 1024 * 1024  # below this much work, encoding in-process beats starting workers
BPE_DROPOUT_COST = 12  # BPE-dropout's time per byte in SentencePiece's (Multi30k's 58,000 sentences: 5.0 s, 0.41 s)


def file_identity(path: str | Path) -> dict[str, Any]:
    """Path, size and sha256 of an input file (streamed)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise CorpusError(f"{path}: cannot be read ({error.strerror})") from None
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


PREPARED_FILES = {"manifest.json", "tokenizer.model", "train.src.bin", "train.tgt.bin", "train.src.idx",
                  "train.tgt.idx", "train.lengths.bin", "valid.src.txt", "valid.tgt.txt"}


def is_prepared(path: Path) -> bool:
    """Whether `path` is a prepared DATA folder holding nothing but what `prepare` writes."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get("format") == FORMAT
            and holds_only(path, PREPARED_FILES.__contains__))


# ----------------------------------------------------------------------------- encoding, in workers

_worker_tokenizer: Tokenizer | None = None
_worker_dropout: BPEDropout | None = None


def _start_worker(model_proto: bytes) -> None:
    global _worker_tokenizer, _worker_dropout
    _worker_tokenizer = Tokenizer(model_proto)
    _worker_dropout = None  # built when a chunk first needs it


def _encode(texts: list[str], first_line: int, side: str, dropout: float, copy_seed: str,
            moses_lang: str | None) -> list[list[int]]:
    """SentencePiece's ids, or BPE-dropout's with each line's own generator (seeded by the copy,
    the side and the line number): the same ids whatever the workers and chunks. `moses_lang`:
    the text made into Moses text of that language first."""
    global _worker_dropout
    if moses_lang:
        texts = moses_text(texts, moses_lang)
    if not dropout:
        return _worker_tokenizer.encode(texts)
    if _worker_dropout is None:
        _worker_dropout = BPEDropout(_worker_tokenizer)
    return [_worker_dropout.encode(text, dropout, random.Random(f"{copy_seed}:{side}:{first_line + k}"))
            for k, text in enumerate(texts)]


@dataclass
class EncodedChunk:
    """The kept pairs of one chunk of lines, and what was skipped."""

    src_ids: np.ndarray
    tgt_ids: np.ndarray
    lengths: np.ndarray  # [kept, 2]
    empty: int
    too_long: int
    examples: list[str]  # a few skipped lines, for the report


def _encode_chunk(task: tuple[int, list[str], list[str], int, str, str, float, str, tuple[str, str] | None]
                  ) -> EncodedChunk:
    first_line, src, tgt, max_length, id_dtype, length_dtype, dropout, copy_seed, moses_langs = task
    src_lang, tgt_lang = moses_langs or (None, None)
    src_ids = _encode(src, first_line, "src", dropout, copy_seed, src_lang)
    tgt_ids = _encode(tgt, first_line, "tgt", dropout, copy_seed, tgt_lang)
    kept_src, kept_tgt, lengths, examples = [], [], [], []
    empty = too_long = 0
    for offset, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or not t:
            empty += 1
            reason = "empty"
        elif len(s) > max_length or len(t) > max_length:
            too_long += 1
            reason = f"longer than {max_length} tokens"
        else:
            kept_src.append(s)
            kept_tgt.append(t)
            lengths.append((len(s), len(t)))
            continue
        if len(examples) < 3:
            examples.append(f"line {first_line + offset}: {reason}")

    def flat(rows: list[list[int]]) -> np.ndarray:
        return np.fromiter((i for row in rows for i in row), dtype=np.dtype(id_dtype).newbyteorder("<"))

    return EncodedChunk(flat(kept_src), flat(kept_tgt),
                        np.array(lengths, dtype=np.dtype(length_dtype).newbyteorder("<")).reshape(-1, 2),
                        empty, too_long, examples)


def _ordered_map(fn: Callable, tasks: Iterable, workers: int, initializer: Callable, initargs: tuple) -> Iterator:
    """fn over tasks in worker processes, results in order, at most 2 tasks per worker in flight
    (so the corpus is never read ahead into memory); workers <= 1 runs in this process."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(fn, tasks)
        return
    # spawn, not fork: under torchrun the process already runs the process group's threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _chunks(pairs: Iterator[tuple[str, str]], size: int) -> Iterator[tuple[int, list[str], list[str]]]:
    line = 1
    while chunk := list(islice(pairs, size)):
        src, tgt = zip(*chunk)
        yield line, list(src), list(tgt)
        line += len(chunk)


# ----------------------------------------------------------------------------- prepare

@dataclass(frozen=True)
class PrepareOptions:
    vocab_size: int = 8000
    max_length: int = 250  # subwords a side; longer pairs are skipped and counted
    sample_sentences: int = 1_000_000  # sentences (source and target together) SentencePiece learns from
    seed: int = 1
    workers: int | None = None  # None: the CPUs, or none at all for a small corpus
    lowercase: bool = False  # the vocabulary case-folds all text (Tokenizer.train)
    bpe_dropout: float = 0.0  # the training pairs segmented with BPE-dropout (aiayn.data.bpe_dropout)
    segmentations: int = 1  # copies of the training pairs, each segmented anew (with bpe_dropout)
    moses_text: tuple[str, str] | None = None  # (source, target) languages: the training text made Moses text

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_length", "sample_sentences", "segmentations"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length > 2**32 - 1:
            raise InputError(f"max_length {self.max_length} is too large")
        check_bpe_dropout(self.bpe_dropout, self.segmentations)
        for lang in self.moses_text or ():
            check_language(lang)

    def identity(self) -> dict[str, Any]:
        """What decides the output (workers do not). Options added later only when set: data
        prepared before they existed stays up to date."""
        return {"vocab_size": self.vocab_size, "max_length": self.max_length,
                "sample_sentences": self.sample_sentences, "seed": self.seed,
                **({"lowercase": True} if self.lowercase else {}),
                **({"bpe_dropout": self.bpe_dropout, "segmentations": self.segmentations} if self.bpe_dropout else {}),
                **({"moses_text": list(self.moses_text)} if self.moses_text else {})}


def training_pairs(train_src: str, train_tgt: str, options: PrepareOptions) -> Iterator[tuple[str, str]]:
    """The training pairs as the vocabulary is learned on them: made Moses text with `moses_text`."""
    pairs = iter_parallel(train_src, train_tgt)
    if not options.moses_text:
        return pairs
    src_lang, tgt_lang = options.moses_text
    return ((moses_text([src], src_lang)[0], moses_text([tgt], tgt_lang)[0]) for src, tgt in pairs)


def _learn_vocabulary(train_src: str, train_tgt: str, options: PrepareOptions) -> tuple[Tokenizer, int]:
    """SentencePiece on a random sample of both sides; also checks the files line by line."""
    lines, failure = 0, None

    def sentences() -> Iterator[str]:
        nonlocal lines, failure
        try:
            for src, tgt in training_pairs(train_src, train_tgt, options):
                lines += 1
                yield src
                yield tgt
        except CorpusError as error:  # SentencePiece would turn it into a RuntimeError of its own
            failure = error

    try:
        tokenizer = Tokenizer.train(sentences(), options.vocab_size, options.sample_sentences, options.seed,
                                    lowercase=options.lowercase)
    except RuntimeError as error:  # SentencePiece refuses e.g. a vocabulary smaller than the characters seen
        if failure or lines == 0:
            raise failure or CorpusError(f"{train_src}: empty corpus") from None
        raise InputError(f"vocab_size {options.vocab_size}: SentencePiece cannot learn it on {train_src} + "
                         f"{train_tgt} ({str(error).splitlines()[-1]})") from None
    if failure or lines == 0:
        raise failure or CorpusError(f"{train_src}: empty corpus")
    return tokenizer, lines


def _write_train_split(staged: Path, train_src: str, train_tgt: str, tokenizer: Tokenizer,
                       options: PrepareOptions, workers: int, progress: Callable[[int], None]) -> dict[str, Any]:
    id_dtype = "uint16" if tokenizer.vocab_size <= 2**16 else "uint32"
    length_dtype = "uint16" if options.max_length < 2**16 - 1 else "uint32"  # lengths + 1 must fit too
    kept = empty = too_long = src_tokens = tgt_tokens = lines = 0
    examples: list[str] = []
    files = {name: open(staged / f"train.{name}", "wb") for name in ("src.bin", "tgt.bin", "src.idx", "tgt.idx",
                                                                    "lengths.bin")}
    try:
        files["src.idx"].write(np.zeros(1, "<i8").tobytes())
        files["tgt.idx"].write(np.zeros(1, "<i8").tobytes())
        tasks = ((first, src, tgt, options.max_length, id_dtype, length_dtype, options.bpe_dropout,
                  f"{options.seed}:{copy}", options.moses_text)
                 for copy in range(options.segmentations)
                 for first, src, tgt in _chunks(iter_parallel(train_src, train_tgt), CHUNK_PAIRS))
        for chunk in _ordered_map(_encode_chunk, tasks, workers, _start_worker, (tokenizer.model_proto,)):
            files["src.bin"].write(chunk.src_ids.tobytes())
            files["tgt.bin"].write(chunk.tgt_ids.tobytes())
            files["lengths.bin"].write(chunk.lengths.tobytes())
            ends = np.cumsum(chunk.lengths, axis=0, dtype=np.int64)
            files["src.idx"].write((src_tokens + ends[:, 0]).astype("<i8").tobytes())
            files["tgt.idx"].write((tgt_tokens + ends[:, 1]).astype("<i8").tobytes())
            n = len(chunk.lengths)
            kept, empty, too_long = kept + n, empty + chunk.empty, too_long + chunk.too_long
            src_tokens += int(ends[-1, 0]) if n else 0
            tgt_tokens += int(ends[-1, 1]) if n else 0
            # A skipped line is skipped in every copy: named once.
            examples += [e for e in (f"{train_src} {e}" for e in chunk.examples) if e not in examples][: 3 - len(examples)]
            lines += n + chunk.empty + chunk.too_long
            progress(lines)
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    finally:
        for f in files.values():
            f.close()
    if kept == 0:
        raise CorpusError(f"{train_src}: every pair was filtered out ({empty} with an empty side, "
                          f"{too_long} longer than max_length {options.max_length})")
    return {"pairs": kept, "lines": lines, "source_tokens": src_tokens, "target_tokens": tgt_tokens,
            "skipped": {"empty": empty, "too_long": too_long}, "examples": examples,
            "id_dtype": id_dtype, "length_dtype": length_dtype}


def _up_to_date(out: Path, identities: dict[str, Any], options: PrepareOptions) -> bool:
    try:
        data = PreparedData(out)  # reads the manifest and checks every file's size
    except InputError:
        return False
    data.close()
    return data.manifest["inputs"] == identities and data.manifest["options"] == options.identity()


def _check_valid(valid_src: str, valid_tgt: str) -> None:
    if not any(src.strip() and tgt.strip() for src, tgt in iter_parallel(valid_src, valid_tgt)):
        raise CorpusError(f"{valid_src}: no validation pair with text on both sides")


def _copy_valid(staged: Path, valid_src: str, valid_tgt: str) -> dict[str, Any]:
    lines = usable = 0
    with open(staged / "valid.src.txt", "w", encoding="utf-8") as src_out, \
            open(staged / "valid.tgt.txt", "w", encoding="utf-8") as tgt_out:
        for src, tgt in iter_parallel(valid_src, valid_tgt):
            src_out.write(src + "\n")
            tgt_out.write(tgt + "\n")
            lines += 1
            usable += bool(src.strip() and tgt.strip())
    if not usable:
        raise CorpusError(f"{valid_src}: no validation pair with text on both sides")
    return {"lines": lines}


def prepare(out: str | Path, train_src: str, train_tgt: str, valid_src: str | None = None,
            valid_tgt: str | None = None, options: PrepareOptions = PrepareOptions(), overwrite: bool = False,
            log: Callable[[str], None] = lambda message: print(message, file=sys.stderr)) -> dict[str, Any]:
    """Prepare a corpus into DATA (`out`) and return its manifest. Re-running on the same inputs
    and options finds DATA up to date and writes nothing."""
    out = Path(out)
    if (valid_src is None) != (valid_tgt is None):
        raise InputError("give both --valid-src and --valid-tgt, or neither")
    inputs = {"train_src": train_src, "train_tgt": train_tgt, "valid_src": valid_src, "valid_tgt": valid_tgt}
    for path in filter(None, inputs.values()):
        require_file(path)
    check_output_dir(out, "prepared data folder", is_prepared, overwrite=True)
    identities = {name: file_identity(path) for name, path in inputs.items() if path}
    if is_prepared(out):
        if _up_to_date(out, identities, options):
            log(f"{out} is up to date (same inputs and options): nothing to do")
            return read_manifest(out)
        if not overwrite:
            raise InputError(f"{out} holds data prepared from other inputs or options, or damaged; "
                             "pass --overwrite to replace it")
    if valid_src:
        _check_valid(valid_src, valid_tgt)  # a small file: found wrong before an hour of encoding
    started = time.perf_counter()
    tokenizer, lines = _learn_vocabulary(train_src, train_tgt, options)
    if options.bpe_dropout:
        try:
            BPEDropout(tokenizer)  # the vocabulary is one it can segment: checked here, not in a worker
        except ValueError as error:
            raise InputError(str(error)) from None
    if time.perf_counter() - started > 5:  # progress for a large corpus; quiet for a small one
        log(f"learned a shared vocabulary of {tokenizer.vocab_size} pieces on a sample of up to "
            f"{options.sample_sentences:,} of {2 * lines:,} sentences in {time.perf_counter() - started:.0f} s")
    # The work: the bytes encoded, once per segmentation; BPE-dropout runs in Python, ~12x slower.
    work = sum(identities[n]["bytes"] for n in ("train_src", "train_tgt")) * options.segmentations * (
        BPE_DROPOUT_COST if options.bpe_dropout else 1)
    workers = options.workers if options.workers is not None else (
        1 if work < SMALL_INPUT_BYTES else min(8, len(os.sched_getaffinity(0))))
    with building(out, owned=is_prepared if overwrite else None) as staged:
        tokenizer.save(staged / "tokenizer.model")
        encoding_started = time.perf_counter()

        to_encode = lines * options.segmentations

        def progress(done: int) -> None:
            rate = done / max(time.perf_counter() - encoding_started, 1e-9)
            log(f"encoded {done:,} of {to_encode:,} pairs ({rate:,.0f} pairs/s, ETA {(to_encode - done) / rate:.0f} s)")

        train = _write_train_split(staged, train_src, train_tgt, tokenizer, options, workers,
                                   _every(progress, seconds=10))
        valid = _copy_valid(staged, valid_src, valid_tgt) if valid_src else None
        seconds = time.perf_counter() - started
        manifest = {"format": FORMAT, "version": VERSION, "inputs": identities, "options": options.identity(),
                    "vocab_size": tokenizer.vocab_size, "tokenizer_sha256": hashlib.sha256(tokenizer.model_proto).hexdigest(),
                    "train": train, "valid": valid, "seconds": round(seconds, 1), "workers": workers}
        write_atomic(staged / "manifest.json", json.dumps(manifest, indent=1))
    copies = (f"{options.segmentations} segmentation{'s' if options.segmentations > 1 else ''} with BPE-dropout "
              f"{options.bpe_dropout} of {lines:,} lines: " if options.bpe_dropout else "")
    log(f"prepared {copies}{train['pairs']:,} pairs ({train['skipped']['empty']:,} skipped as empty, "
        f"{train['skipped']['too_long']:,} as longer than {options.max_length}) into {out} in {seconds:.0f} s "
        f"({train['lines'] / seconds:,.0f} pairs/s, {workers} worker{'s' if workers > 1 else ''})")
    return manifest


def _every(fn: Callable[[int], None], seconds: float) -> Callable[[int], None]:
    """fn, called at most once per `seconds`."""
    last = time.perf_counter()

    def throttled(value: int) -> None:
        nonlocal last
        if time.perf_counter() - last >= seconds:
            last = time.perf_counter()
            fn(value)
    return throttled


# ----------------------------------------------------------------------------- reading

TRAIN_FIELDS = ("pairs", "source_tokens", "target_tokens", "id_dtype", "length_dtype")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{directory}: not prepared data (no manifest.json; an interrupted prepare leaves none)") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: corrupt ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise InputError(f"{path}: not {FORMAT} version {VERSION}")
    missing = [key for key in ("inputs", "options", "vocab_size", "tokenizer_sha256", "train") if key not in manifest]
    train_missing = [key for key in TRAIN_FIELDS if key not in (manifest.get("train") or {})]
    if missing or train_missing:
        raise InputError(f"{path}: damaged (no {', '.join(missing + ['train.' + k for k in train_missing])})")
    return manifest


class PreparedData:
    """A prepared DATA folder: its tokenizer, the lengths of its training pairs, and their ids on demand."""

    def __init__(self, directory: str | Path):
        self._files: dict[str, int] = {}  # open file descriptors, by file name
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        train = self.manifest["train"]
        self.pairs = train["pairs"]
        self.id_dtype = np.dtype(train["id_dtype"]).newbyteorder("<")
        self.length_dtype = np.dtype(train["length_dtype"]).newbyteorder("<")
        expected = {"train.src.bin": train["source_tokens"] * self.id_dtype.itemsize,
                    "train.tgt.bin": train["target_tokens"] * self.id_dtype.itemsize,
                    "train.src.idx": (self.pairs + 1) * 8, "train.tgt.idx": (self.pairs + 1) * 8,
                    "train.lengths.bin": self.pairs * 2 * self.length_dtype.itemsize}
        for name, size in expected.items():
            path = self.directory / name
            if not path.is_file() or path.stat().st_size != size:
                raise InputError(f"{path}: missing or of the wrong size (expected {size} bytes): the data is damaged")

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.model"

    def tokenizer(self) -> Tokenizer:
        try:
            tokenizer = Tokenizer.load(self.tokenizer_path)
        except (OSError, RuntimeError, ValueError) as error:
            raise InputError(f"{self.tokenizer_path}: missing or corrupt ({error})") from None
        if hashlib.sha256(tokenizer.model_proto).hexdigest() != self.manifest["tokenizer_sha256"]:
            raise InputError(f"{self.tokenizer_path}: does not match {self.directory / 'manifest.json'}")
        return tokenizer

    def lengths(self) -> np.ndarray:
        """[pairs, 2] source and target lengths (subwords, without </s>), read into memory."""
        return np.fromfile(self.directory / "train.lengths.bin", dtype=self.length_dtype).reshape(-1, 2)

    def valid_text(self) -> tuple[list[str], list[str]] | None:
        if not self.manifest.get("valid"):
            return None
        # read_lines splits at "\n" only, as prepare wrote them (str.splitlines would also split
        # at U+2028, form feeds, ... and misalign the two sides).
        src, tgt = (read_lines(self.directory / f"valid.{side}.txt") for side in ("src", "tgt"))
        return src, tgt

    def _fd(self, name: str) -> int:
        if name not in self._files:
            self._files[name] = os.open(self.directory / name, os.O_RDONLY)
        return self._files[name]

    def _read(self, side: str, index: int) -> np.ndarray:
        start, end = np.frombuffer(os.pread(self._fd(f"train.{side}.idx"), 16, 8 * index), dtype="<i8")
        size = self.id_dtype.itemsize
        return np.frombuffer(os.pread(self._fd(f"train.{side}.bin"), int(end - start) * size, int(start) * size),
                             dtype=self.id_dtype)

    def read_pairs(self, indices: Iterable[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Source and target ids of the given pairs. Read with pread, not through a memory map:
        pages of a mapped file count in the process's memory once touched, and a training run
        touches pages all over a multi-gigabyte corpus."""
        indices = list(indices)
        return [self._read("src", i) for i in indices], [self._read("tgt", i) for i in indices]

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __del__(self) -> None:
        self.close()
