"""The Multi30k loader against the shared local copy, and its real download code over file://."""
from __future__ import annotations

from pathlib import Path

import pytest

from aiayn.data import multi30k
from aiayn.data.corpus import CorpusError


def test_local_copy_loads_every_language_pair_in_either_direction(multi30k_dir: Path) -> None:
    de, en = multi30k.load_split("train", "de", "en", multi30k_dir)
    assert len(de) == len(en) == 29000
    en2, cs = multi30k.load_split("val", "en", "cs", multi30k_dir)
    assert len(en2) == len(cs) == 1014
    fr, _ = multi30k.load_split("test_2016_flickr", "fr", "de", multi30k_dir)
    assert len(fr) == 1000
    assert de[0] != en[0]


def test_unknown_split_or_language_is_refused(multi30k_dir: Path) -> None:
    with pytest.raises(CorpusError, match="unknown Multi30k language"):
        multi30k.load_split("train", "de", "xx", multi30k_dir)
    with pytest.raises(CorpusError, match="unknown Multi30k split"):
        multi30k.load_split("dev", "de", "en", multi30k_dir)


def test_download_fetches_into_the_cache_once(multi30k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real download code, pointed at the local copy through a file:// URL (no network here).
    monkeypatch.setattr(multi30k, "URL", multi30k_dir.as_uri() + "/{split}.{lang}.gz")
    monkeypatch.setattr(multi30k, "DEFAULT_CACHE", tmp_path / "cache")
    de, en = multi30k.load_split("val", "de", "en")
    assert len(de) == 1014
    assert (tmp_path / "cache" / "val.de.gz").read_bytes() == (multi30k_dir / "val.de.gz").read_bytes()
    assert not list((tmp_path / "cache").glob("*.partial"))
    monkeypatch.setattr(multi30k, "URL", (tmp_path / "missing").as_uri() + "/{split}.{lang}.gz")
    with pytest.raises(CorpusError, match="--data-dir"):
        multi30k.split_path("val", "fr")
