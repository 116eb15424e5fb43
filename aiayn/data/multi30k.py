"""Multi30k task 1 (Elliott et al., 2016): Flickr30k captions in English, German, French and Czech.

Reads a local copy (`data_dir`, files named as upstream: train.de.gz, val.en.gz, ...) or downloads
the public raw files from the multi30k/dataset repository into a cache directory once.
"""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from aiayn.data.corpus import CorpusError, read_parallel

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{split}.{lang}.gz"
LANGUAGES = ("de", "en", "fr", "cs")
SPLITS = ("train", "val", "test_2016_flickr")
DEFAULT_CACHE = Path(os.environ.get("AIAYN_CACHE", Path.home() / ".cache" / "aiayn")) / "multi30k"


def split_path(split: str, lang: str, data_dir: str | Path | None = None) -> Path:
    """The local file of one split and language, downloaded into the cache if no data_dir is given."""
    if split not in SPLITS:
        raise CorpusError(f"unknown Multi30k split {split!r}; choose one of {', '.join(SPLITS)}")
    if lang not in LANGUAGES:
        raise CorpusError(f"unknown Multi30k language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    name = f"{split}.{lang}.gz"
    if data_dir is not None:
        return Path(data_dir) / name
    path = DEFAULT_CACHE / name
    if not path.is_file():
        download(URL.format(split=split, lang=lang), path)
    return path


def download(url: str, path: Path) -> None:
    """Fetch url to path atomically (a partial download never looks like a complete file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
            f.write(response.read())
    except OSError as error:
        raise CorpusError(f"cannot download {url} ({error}); pass --data-dir with a local copy") from error
    partial.replace(path)


def load_split(split: str, src_lang: str, tgt_lang: str, data_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Source and target sentences of one split, for any pair of the four languages."""
    if src_lang == tgt_lang:
        raise CorpusError(f"source and target language are both {src_lang!r}")
    return read_parallel(split_path(split, src_lang, data_dir), split_path(split, tgt_lang, data_dir))
