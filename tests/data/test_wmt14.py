"""The WMT14 en-de data step (aiayn download wmt14-en-de) and the paper's recipe, end to end on a
miniature of the five archives (tests/data/fixtures/wmt14_pairs.tsv, packed as the real ones are and
served from file:// URLs): checksums, partial and corrupt downloads, the text written, then prepare,
train from recipes/wmt14_en_de_base.toml, average and evaluate with the paper's compound-split BLEU."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import tarfile
import time
from pathlib import Path

import pytest

from aiayn.cli import main
from aiayn.data import wmt14
from aiayn.data.corpus import CorpusError
from aiayn.evaluation.bleu import compound_split_bleu

FIXTURE = Path(__file__).parent / "fixtures" / "wmt14_pairs.tsv"
ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {wmt14.EUROPARL: "europarl", wmt14.COMMONCRAWL: "commoncrawl", wmt14.NEWS_COMMENTARY: "news-commentary",
            wmt14.DEV: "newstest2013", wmt14.TEST: "newstest2014"}


def fixture_pairs() -> dict[str, list[tuple[str, str]]]:
    pairs: dict[str, list[tuple[str, str]]] = {}
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            section, en, de = line.split("\t")
            pairs.setdefault(section, []).append((en, de))
    return pairs


def member_text(sentences: list[str], form: str) -> bytes:
    if form == "text":
        return "".join(s + "\n" for s in sentences).encode("utf-8")
    segments = "".join(f'<seg id="{i}">{s}</seg>\n' for i, s in enumerate(sentences, 1))
    return f'<srcset setid="newstest2014">\n<doc docid="1" origlang="en">\n{segments}</doc>\n</srcset>\n'.encode("utf-8")


def pack(archive: wmt14.Archive, folder: Path) -> Path:
    """The fixture's sentences of `archive`, in a .tgz with the real archive's member names."""
    pairs = fixture_pairs()[SECTIONS[archive]]
    path = folder / archive.name
    with tarfile.open(path, "w:gz") as tar:
        for part in (p for p in wmt14.PARTS if p.archive == archive):
            for lang, member in part.members.items():
                data = member_text([pair[0 if lang == "en" else 1] for pair in pairs], part.form)
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The five archives on a file:// 'server', and PARTS pointing there with their checksums."""
    served = tmp_path / "server"
    served.mkdir()
    moved = {}
    for archive in SECTIONS:
        path = pack(archive, served)
        moved[archive] = wmt14.Archive(path.as_uri(), "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())
    parts = tuple(dataclasses.replace(p, archive=moved[p.archive]) for p in wmt14.PARTS)
    monkeypatch.setattr(wmt14, "PARTS", parts)
    return served


def test_the_catalogue_names_the_papers_data_with_well_formed_checksums() -> None:
    lengths = {"sha256": 64, "md5": 32}
    for archive in SECTIONS:
        algorithm, _, digest = archive.checksum.partition(":")
        assert archive.url.startswith("https://") and archive.name.endswith(".tgz")
        assert re.fullmatch(f"[0-9a-f]{{{lengths[algorithm]}}}", digest), archive
    assert {p.output for p in wmt14.PARTS} == {"train", "newstest2013", "newstest2014"}
    assert wmt14.TEST.name == "test-full.tgz"  # all 3,003 sentences, as the paper's newstest2014


def test_download_writes_the_text_and_a_manifest(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, archives = tmp_path / "wmt", tmp_path / "archives"
    assert main(["download", "wmt14-en-de", "--out", str(out), "--archives", str(archives)]) == 0
    pairs = fixture_pairs()
    train = pairs["europarl"] + pairs["commoncrawl"] + pairs["news-commentary"]
    assert (out / "train.en").read_text(encoding="utf-8").splitlines() == [en for en, _ in train]
    assert (out / "train.de").read_text(encoding="utf-8").splitlines() == [de for _, de in train]
    assert (out / "newstest2013.de").read_text(encoding="utf-8").splitlines() == [de for _, de in pairs["newstest2013"]]
    test_en = (out / "newstest2014.en").read_text(encoding="utf-8").splitlines()
    assert test_en[-1] == "Prices rose again." and len(test_en) == len(pairs["newstest2014"])  # <seg> text, spaces collapsed
    assert sorted(p.name for p in archives.iterdir()) == sorted(a.name for a in SECTIONS)
    assert wmt14.is_wmt14_folder(out) and f"train: {len(train)} pairs" in capsys.readouterr().out
    # Checked archives are used again without a download; --overwrite replaces only a download's folder.
    for archive in mirror.iterdir():
        archive.unlink()
    assert main(["download", "wmt14-en-de", "--out", str(out), "--archives", str(archives), "--overwrite"]) == 0
    assert main(["download", "wmt14-en-de", "--out", str(out), "--archives", str(archives)]) == 2
    (out / "notes.txt").write_text("mine")
    assert main(["download", "wmt14-en-de", "--out", str(out), "--archives", str(archives), "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 + sum(line.startswith("downloading ") for line in err[:-1]) and "Traceback" not in err[-1]
    return err[-1]


def test_a_corrupt_download_is_refused_and_nothing_is_kept(mirror: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    served = mirror / wmt14.NEWS_COMMENTARY.name
    served.write_bytes(served.read_bytes()[:-7])  # cut short on the server
    out, archives = tmp_path / "wmt", tmp_path / "archives"
    assert main(["download", "wmt14-en-de", "--out", str(out), "--archives", str(archives)]) == 2
    line = one_line_error(capsys)
    assert "training-parallel-nc-v9.tgz" in line and "checksum" in line
    assert not out.exists()
    assert wmt14.NEWS_COMMENTARY.name not in {p.name for p in archives.iterdir()}
    assert not [p for p in archives.iterdir() if p.name.startswith(".")]  # no partial file left


def test_a_corrupt_archive_already_there_is_refused_not_deleted(mirror: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    mine = archives / wmt14.DEV.name
    mine.write_bytes(b"not the archive")
    assert main(["download", "wmt14-en-de", "--out", str(tmp_path / "wmt"), "--archives", str(archives)]) == 2
    assert str(mine) in one_line_error(capsys) and mine.read_bytes() == b"not the archive"
    assert not (tmp_path / "wmt").exists()


class _Response(io.BytesIO):
    def __init__(self, body: bytes, announced: int):
        super().__init__(body)
        self.headers = {"Content-Length": str(announced)}


def test_a_download_cut_short_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    archive = wmt14.Archive("https://example.org/data/dev.tgz", "sha256:" + "0" * 64)
    with pytest.raises(CorpusError, match="stopped after 5 of 100 bytes"):
        wmt14.obtain(archive, tmp_path, opener=lambda url, timeout: _Response(b"12345", 100))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CorpusError, match="fails its checksum"):
        wmt14.obtain(archive, tmp_path, opener=lambda url, timeout: _Response(b"12345", 5))
    assert list(tmp_path.iterdir()) == []

    def unreachable(url: str, timeout: float) -> _Response:
        raise OSError("Network is unreachable")

    with pytest.raises(CorpusError, match="Network is unreachable.*--archives"):
        wmt14.obtain(archive, tmp_path, opener=unreachable)
    with pytest.raises(CorpusError, match="not an http"):
        wmt14.obtain(dataclasses.replace(archive, url="ftp://example.org/dev.tgz"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_what_a_killed_download_left_is_removed_and_a_running_ones_is_not(tmp_path: Path) -> None:
    body = b"the archive"
    archive = wmt14.Archive("https://example.org/data/dev.tgz", "sha256:" + hashlib.sha256(body).hexdigest())
    dead = 2**22 + 12345  # above the largest pid Linux allows: no process has it
    killed, running = tmp_path / f".dev.tgz.partial-{dead}-x1", tmp_path / f".dev.tgz.partial-{os.getpid()}-x2"
    recent = tmp_path / f".dev.tgz.partial-{dead}-x3"  # perhaps another machine's, still writing
    for leftover in (killed, running, recent):
        leftover.write_bytes(b"the arch")
    for leftover in (killed, running):
        os.utime(leftover, (0, time.time() - wmt14.LEFTOVER_IDLE_S - 1))
    assert wmt14.obtain(archive, tmp_path, opener=lambda url, timeout: _Response(body, len(body))).read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dev.tgz", running.name, recent.name])


def test_an_archive_without_its_members_or_with_unequal_sides_is_refused(mirror: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.tgz"
    with tarfile.open(wrong, "w:gz") as tar:
        for member, text in (("dev/newstest2013.en", b"a\nb\n"), ("dev/newstest2013.de", b"a\n")):
            info = tarfile.TarInfo(member)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    part = dataclasses.replace(wmt14.PARTS[3], archive=wmt14.Archive(wrong.as_uri(), "sha256:" +
                                                                    hashlib.sha256(wrong.read_bytes()).hexdigest()))
    with pytest.raises(CorpusError, match="has 2 lines but .* has 1"):
        wmt14.fetch(tmp_path / "out", tmp_path / "archives", parts=(part,))
    assert not (tmp_path / "out").exists()
    with pytest.raises(CorpusError, match="has no training/europarl"):
        list(wmt14.member_lines(wrong, "training/europarl-v7.de-en.en"))


def test_compound_split_bleu_splits_hyphens_between_words_as_the_papers_script() -> None:
    hyphenated, spaced = ["Die Ost-West-Beziehung hat sich verändert ."], ["Die Ost West Beziehung hat sich verändert ."]
    assert compound_split_bleu(hyphenated, hyphenated).score == pytest.approx(100.0)
    # Split, "Ost-West-Beziehung" is 5 tokens of which 3 match "Ost West Beziehung": partly right, not all wrong.
    assert 0.0 < compound_split_bleu(hyphenated, spaced).score < 100.0
    assert compound_split_bleu(["Das ist gut ."], ["das ist gut ."]).score < 100.0  # cased
    # replace-unicode-punctuation first: curly and full-width marks count as their ASCII forms.
    curly, plain = ["Er sagte “ja” ： gut。"], ['Er sagte "ja" : gut.']
    assert compound_split_bleu(curly, plain).score == pytest.approx(100.0)


def test_the_recipe_runs_end_to_end_on_the_fixture(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Download, prepare, train from the base recipe (made tiny by flags), average, evaluate."""
    wmt, data, run = tmp_path / "wmt", tmp_path / "data", tmp_path / "run"
    assert main(["download", "wmt14-en-de", "--out", str(wmt), "--archives", str(tmp_path / "archives")]) == 0
    assert main(["prepare", "--out", str(data), "--train-src", str(wmt / "train.en"), "--train-tgt",
                 str(wmt / "train.de"), "--valid-src", str(wmt / "newstest2013.en"), "--valid-tgt",
                 str(wmt / "newstest2013.de"), "--vocab-size", "400"]) == 0
    assert main(["train", "--config", str(ROOT / "recipes" / "wmt14_en_de_base.toml"), "--data", str(data), "--out",
                 str(run), "--device", "cpu", "--preset", "tiny", "--batch-tokens", "600", "--max-steps", "4",
                 "--save-every", "2", "--eval-every", "4", "--warmup", "2", "--log-every", "1"]) == 0
    assert main(["average", str(run), "--last", "2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "checkpoints" / "average"), "--src", str(wmt / "newstest2014.en"),
                 "--ref", str(wmt / "newstest2014.de"), "--beam", "4", "--compound-split-bleu"]) == 0
    printed = capsys.readouterr().out
    assert "4 sentences, beam 4, alpha 0.6" in printed and "sacreBLEU" in printed
    assert re.search(r"BLEU \d+\.\d\d on Moses-tokenised text with hyphenated compounds split", printed)


@pytest.mark.parametrize("name, preset, steps, averaged", [("base", "base", 100_000, 5), ("big", "big", 300_000, 20)])
def test_the_recipes_hold_the_papers_settings(name: str, preset: str, steps: int, averaged: int) -> None:
    from aiayn.cli import parse_args

    recipe = ROOT / "recipes" / f"wmt14_en_de_{name}.toml"
    args = parse_args(["train", "--config", str(recipe), "--data", "DATA", "--out", "RUN"])
    assert (args.preset, args.max_steps, args.warmup_steps, args.label_smoothing) == (preset, steps, 4000, 0.1)
    assert args.batch_tokens * 8 == 50_000 and args.lr_scale == 1.0 and args.bf16  # §5.1: 25,000 + 25,000 a step
    assert args.keep_last >= averaged and f"aiayn average RUN --last {averaged}" in recipe.read_text()
