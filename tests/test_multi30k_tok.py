"""bench/multi30k_tok.py: the Multi30k papers' tokenised lowercased text from the raw files, and
the scores of a translation in it."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def multi30k_tok(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "multi30k_tok.py"), *args], capture_output=True,
                          text=True, timeout=300)


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def raw_copy(multi30k_dir: Path, folder: Path, splits: tuple[str, ...]) -> Path:
    """A raw folder of the en and de files of some splits (the whole of Multi30k takes longer)."""
    folder.mkdir()
    for split in splits:
        for lang in ("en", "de"):
            name = f"{split}.{lang}.gz"
            (folder / name).write_bytes((multi30k_dir / name).read_bytes())
    return folder


def test_write_makes_the_papers_tokenised_lowercased_files(multi30k_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    done = multi30k_tok("write", str(raw_copy(multi30k_dir, tmp_path / "raw", ("train", "test_2016_flickr"))), str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["test_2016_flickr.de.gz", "test_2016_flickr.en.gz",
                                                     "train.de.gz", "train.en.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "tok"]  # no hidden stage left
    # The first lines of multi30k/dataset's data/task1/tok/test_2016_flickr.lc.norm.tok.{en,de}.
    assert lines(out / "test_2016_flickr.en.gz")[0] == "a man in an orange hat starring at something ."
    assert lines(out / "test_2016_flickr.de.gz")[1] == \
        "ein boston terrier läuft über saftig-grünes gras vor einem weißen zaun ."
    assert len(lines(out / "train.de.gz")) == 29_000


def test_write_refuses_a_folder_with_files_in_it(multi30k_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    done = multi30k_tok("write", str(multi30k_dir), str(tmp_path))
    assert done.returncode == 2 and "is not empty" in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_write_leaves_nothing_when_a_file_is_corrupt(multi30k_dir: Path, tmp_path: Path) -> None:
    raw = raw_copy(multi30k_dir, tmp_path / "raw", ("test_2016_flickr",))
    (raw / "train.de.gz").write_bytes((multi30k_dir / "train.de.gz").read_bytes()[:5000])  # cut short
    done = multi30k_tok("write", str(raw), str(tmp_path / "tok"))
    assert done.returncode == 2 and "train.de.gz: cannot be read" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # neither the folder nor a hidden stage


def test_write_refuses_languages_of_a_split_that_differ_in_length(multi30k_dir: Path, tmp_path: Path) -> None:
    raw = raw_copy(multi30k_dir, tmp_path / "raw", ("test_2016_flickr",))
    with gzip.open(raw / "test_2016_flickr.en.gz", "wt", encoding="utf-8") as f:
        f.write("a man .\n")
    done = multi30k_tok("write", str(raw), str(tmp_path / "tok"))
    assert done.returncode == 2 and "test_2016_flickr.en.gz: 1 lines, but test_2016_flickr.de.gz has 1,000" \
        in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_score_gives_both_metrics_of_a_tokenised_translation(multi30k_dir: Path, tmp_path: Path) -> None:
    raw = raw_copy(multi30k_dir, tmp_path / "raw", ("test_2016_flickr",))
    assert multi30k_tok("write", str(raw), str(tmp_path / "tok")).returncode == 0
    tokenised = lines(tmp_path / "tok" / "test_2016_flickr.de.gz")
    hypotheses = tmp_path / "hyp.de"
    for translation, perfect in ((tokenised, True), (tokenised[:500] + ["ein mann ."] * 500, False)):
        hypotheses.write_text("\n".join(translation) + "\n", encoding="utf-8")
        done = multi30k_tok("score", str(hypotheses), str(raw / "test_2016_flickr.de.gz"), "--lang", "de")
        assert done.returncode == 0, done.stderr
        tokenized, detokenized = (float(line.split()[1]) for line in done.stdout.splitlines()[:2])
        assert "ref_len = 12103" in done.stdout and "case:lc" in done.stdout  # the papers' reference length
        if perfect:  # the detokeniser undoes the tokeniser but for a few spaces
            assert tokenized == 100.0 and detokenized > 99.5
        else:
            assert 30 < detokenized < 90 and 30 < tokenized < 90
    # A plain translation (a --moses-text model's) is tokenised first: the raw reference scores 100.
    done = multi30k_tok("score", str(raw / "test_2016_flickr.de.gz"), str(raw / "test_2016_flickr.de.gz"), "--lang", "de",
                        "--plain")
    assert done.returncode == 0 and done.stdout.startswith("BLEU 100.00 on Moses-tokenised"), done.stdout
    done = multi30k_tok("score", str(raw / "test_2016_flickr.de.gz"), str(raw / "test_2016_flickr.de.gz"), "--lang", "de")
    assert float(done.stdout.split()[1]) < 90  # without --plain, raw text against the tokenised reference


def test_score_names_a_missing_file_and_a_length_mismatch(multi30k_dir: Path, tmp_path: Path) -> None:
    done = multi30k_tok("score", str(tmp_path / "none.de"), str(tmp_path / "ref.de"), "--lang", "de")
    assert done.returncode == 2 and done.stderr == f"multi30k_tok.py: {tmp_path / 'none.de'}: no such file\n"
    (tmp_path / "hyp.de").write_text("ein mann .\n", encoding="utf-8")
    done = multi30k_tok("score", str(tmp_path / "hyp.de"), str(multi30k_dir / "test_2016_flickr.de.gz"), "--lang", "de")
    assert done.returncode == 2 and "hyp.de: 1 lines, but" in done.stderr and "has 1,000" in done.stderr
