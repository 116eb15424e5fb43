"""WMT 2014 English-German, the paper's benchmark (§5.1): about 4.5 million sentence pairs for
training (Europarl v7, Common Crawl, News Commentary v9), newstest2013 for development and
newstest2014 (all 3,003 sentences) for test.

`fetch` downloads the five public archives once into an archive folder (each checked against its
published checksum; a corrupt or partial file is refused and never kept) and writes plain text, one
sentence a line, into a new folder: train.{en,de}, newstest2013.{en,de}, newstest2014.{en,de}, and
wmt14.json saying where each came from. `aiayn prepare` then learns the shared BPE vocabulary
(37,000 pieces in the paper) and the token arrays.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, Any
from dataclasses import dataclass
from pathlib import Path

from aiayn.data.corpus import CorpusError
from aiayn.files import abandoned_partials, building, check_output_dir, holds_only, partial_prefix

LANGUAGES = ("en", "de")
MANIFEST = "wmt14.json"
# A partial archive nothing has written to for this long is a killed download's, even if the folder is
# shared with other machines (whose downloads are not processes here): a live one writes every second.
LEFTOVER_IDLE_S = 3600.0
DEFAULT_ARCHIVES = Path(os.environ.get("AIAYN_CACHE", Path.home() / ".cache" / "aiayn")) / "wmt14"


@dataclass(frozen=True)
class Archive:
    """A public archive, as fairseq's and tensor2tensor's WMT14 en-de scripts fetch it, with the
    checksum its published manifests give ("sha256:..." or "md5:...")."""

    url: str
    checksum: str

    @property
    def name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


@dataclass(frozen=True)
class Part:
    """Where one output file's lines come from: members of an archive, per language; "sgm" members
    are WMT's pseudo-SGML test files (a sentence in each <seg> line)."""

    output: str
    archive: Archive
    members: dict[str, str]
    form: str = "text"


EUROPARL = Archive("https://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz",
                   "sha256:0224c7c710c8a063dfd893b0cc0830202d61f4c75c17eb8e31836103d27d96e7")
COMMONCRAWL = Archive("https://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",
                      "sha256:c7a74e2ea01ac6c920123108627e35278d4ccb5701e15428ffa34de86fa3a9e5")
NEWS_COMMENTARY = Archive("https://www.statmt.org/wmt14/training-parallel-nc-v9.tgz",
                          "sha256:cb8953f292298e6877ae433c98912b927cb0766b303f4540512ddd286c748485")
DEV = Archive("https://data.statmt.org/wmt17/translation-task/dev.tgz",
              "sha256:9d5ff04a28496b7796904ea65e50e3837bab14dbdca88b1e063105f17513dca9")
TEST = Archive("https://www.statmt.org/wmt14/test-full.tgz", "md5:a8cd784e006feb32ac6f3d9ec7eb389a")  # sacreBLEU's wmt14/full

PARTS = (
    Part("train", EUROPARL, {lang: f"training/europarl-v7.de-en.{lang}" for lang in LANGUAGES}),
    Part("train", COMMONCRAWL, {lang: f"commoncrawl.de-en.{lang}" for lang in LANGUAGES}),
    Part("train", NEWS_COMMENTARY, {lang: f"training/news-commentary-v9.de-en.{lang}" for lang in LANGUAGES}),
    Part("newstest2013", DEV, {lang: f"dev/newstest2013.{lang}" for lang in LANGUAGES}),
    Part("newstest2014", TEST, {"en": "test-full/newstest2014-deen-src.en.sgm",
                                "de": "test-full/newstest2014-deen-ref.de.sgm"}, form="sgm"),
)


def is_wmt14_folder(path: Path) -> bool:
    """A folder `fetch` wrote, holding nothing else (so --overwrite may replace it)."""
    names = {MANIFEST} | {f"{part.output}.{lang}" for part in PARTS for lang in LANGUAGES}
    return (path / MANIFEST).is_file() and holds_only(path, names.__contains__)


def fetch(out: str | Path, archives: str | Path | None = None, overwrite: bool = False,
          parts: tuple[Part, ...] | None = None) -> Path:
    """Download (or find) every archive of `parts` (default: PARTS) in `archives` (default: the
    cache), check it, and write the plain text files into `out`, a new or empty folder (with
    `overwrite`: one `fetch` wrote)."""
    out, parts = Path(out), PARTS if parts is None else parts
    check_output_dir(out, "WMT14 folder", is_wmt14_folder, overwrite)
    folder = Path(archives) if archives is not None else DEFAULT_ARCHIVES
    if folder.resolve() == out.resolve() or out.resolve() in folder.resolve().parents:
        raise CorpusError(f"--archives {folder}: inside --out {out}, which gets only the text; keep them apart")
    paths = {archive: obtain(archive, folder) for archive in dict.fromkeys(part.archive for part in parts)}
    with building(out, owned=is_wmt14_folder) as staged:
        counts = {}
        for output in dict.fromkeys(part.output for part in parts):
            counts[output] = write_pair(staged, output, [(p, paths[p.archive]) for p in parts if p.output == output])
        manifest = {"sources": [{"output": p.output, "url": p.archive.url, "checksum": p.archive.checksum,
                                 "members": p.members} for p in parts], "lines": counts}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(", ".join(f"{name}: {lines:,} pairs" for name, lines in counts.items()) + f" in {out}")
    return out


def obtain(archive: Archive, folder: Path, opener: Callable[..., Any] = urllib.request.urlopen) -> Path:
    """The archive's checked file in `folder`: there already, or downloaded now. A file there that
    fails the check is the user's to remove (refused, not deleted); a download that fails it is
    deleted before the error says so, and so is what a killed download left (LEFTOVER_IDLE_S)."""
    path = folder / archive.name
    if path.is_file():
        check_file(path, archive.checksum, f"{path}: fails its checksum (a corrupt or partial download?); "
                                           "delete it, or give --archives another folder")
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in abandoned_partials(path, idle_s=LEFTOVER_IDLE_S):  # of a download killed mid-way
            if leftover.is_file():
                with contextlib.suppress(OSError):  # another user's, or removed by another download meanwhile
                    leftover.unlink()
        fd, partial = tempfile.mkstemp(prefix=partial_prefix(path), dir=folder)
    except OSError as error:
        raise CorpusError(f"{folder}: cannot be written ({error.strerror or error})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            download_into(f, archive.url, opener)
        check_file(Path(partial), archive.checksum, f"{archive.url}: the download fails its checksum "
                                                    "(corrupt or cut short); nothing was kept, try again")
        os.replace(partial, path)
    except OSError as error:  # a full disk, a folder that cannot be written
        raise CorpusError(f"{folder}: cannot be written ({error.strerror or error})") from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def download_into(f: IO[bytes], url: str, opener: Callable[..., Any] = urllib.request.urlopen) -> None:
    """Stream `url` into the open file f, with progress; a short read (fewer bytes than the server
    announced) is an error."""
    if urllib.parse.urlparse(url).scheme not in ("https", "http", "file"):
        raise CorpusError(f"{url}: not an http(s) or file URL")
    print(f"downloading {url}", file=sys.stderr)
    try:
        with opener(url, timeout=60) as response:
            announced = int(response.headers.get("Content-Length") or 0)
            received = 0
            while chunk := response.read(1 << 20):
                write(f, chunk)
                received += len(chunk)
    except (OSError, ValueError) as error:
        raise CorpusError(f"{url}: cannot be downloaded ({error}); download it into --archives yourself") from None
    if announced and received != announced:
        raise CorpusError(f"{url}: the download stopped after {received:,} of {announced:,} bytes; try again")


def write(f: IO[bytes], chunk: bytes) -> None:
    """Write a downloaded chunk; a failure here (a full disk) is the folder's, not the server's."""
    try:
        f.write(chunk)
    except OSError as error:
        raise CorpusError(f"{f.name}: cannot be written ({error.strerror or error})") from None


def check_file(path: Path, checksum: str, message: str) -> None:
    """CorpusError(message) unless the file's digest is `checksum` ("sha256:..." or "md5:...")."""
    algorithm, _, expected = checksum.partition(":")
    digest = hashlib.new(algorithm)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise CorpusError(f"{path}: cannot be read ({error.strerror or error})") from None
    if digest.hexdigest() != expected.lower():
        raise CorpusError(message)


def write_pair(folder: Path, output: str, sources: list[tuple[Part, Path]]) -> int:
    """Write folder/output.{en,de} from the parts' archive members, checking that the two sides
    of each part have as many lines; the number of pairs."""
    total = 0
    files = {lang: open(folder / f"{output}.{lang}", "w", encoding="utf-8") for lang in LANGUAGES}
    try:
        for part, path in sources:
            print(f"{output}: reading {path.name}", file=sys.stderr)
            counts = {lang: write_member(files[lang], path, part.members[lang], part.form) for lang in LANGUAGES}
            if counts["en"] != counts["de"]:
                raise CorpusError(f"{path}: {part.members['en']} has {counts['en']:,} lines but "
                                  f"{part.members['de']} has {counts['de']:,}")
            total += counts["en"]
    finally:
        for f in files.values():
            f.close()
    return total


def write_member(f: IO[str], archive_path: Path, member: str, form: str) -> int:
    """Append one archive member's sentences to f; how many."""
    count = 0
    for line in member_lines(archive_path, member, form):
        f.write(line + "\n")
        count += 1
    return count


_SEGMENT = re.compile(r"<seg[^>]*>(.*)</seg>")


def member_lines(archive_path: Path, member: str, form: str = "text") -> Iterator[str]:
    """The sentences of one member of a .tgz archive: every line of a text file, the <seg> lines of
    a pseudo-SGML one (spaces trimmed and collapsed, as sacreBLEU reads them). Bytes that are not
    UTF-8 become U+FFFD, and a sentence never spans lines (U+2028 and the like stay inside it)."""
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            stream = archive.extractfile(member)
            if stream is None:
                raise KeyError(member)
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if form == "sgm":
                    found = _SEGMENT.search(line)
                    if found is None:
                        continue
                    line = " ".join(found.group(1).split())
                yield line
    except KeyError:
        raise CorpusError(f"{archive_path}: has no {member} (not the archive it should be?)") from None
    except (OSError, EOFError, tarfile.TarError) as error:
        raise CorpusError(f"{archive_path}: cannot be read ({error})") from None
