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


def test_write_makes_the_papers_tokenised_lowercased_files(multi30k_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    done = multi30k_tok("write", str(multi30k_dir), str(out))
    assert done.returncode == 0, done.stderr
    assert {"train.en.gz", "train.de.gz", "val.de.gz", "test_2016_flickr.de.gz"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staged file left
    # The first lines of multi30k/dataset's data/task1/tok/test_2016_flickr.lc.norm.tok.{en,de}.
    assert lines(out / "test_2016_flickr.en.gz")[0] == "a man in an orange hat starring at something ."
    assert lines(out / "test_2016_flickr.de.gz")[1] == \
        "ein boston terrier läuft über saftig-grünes gras vor einem weißen zaun ."
    assert len(lines(out / "train.de.gz")) == 29_000


def test_write_refuses_a_folder_with_files_in_it(multi30k_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    done = multi30k_tok("write", str(multi30k_dir), str(tmp_path))
    assert done.returncode == 2 and "exists and is not an empty folder" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_score_gives_both_metrics_of_a_tokenised_translation(multi30k_dir: Path, tmp_path: Path) -> None:
    reference = multi30k_dir / "test_2016_flickr.de.gz"
    out = tmp_path / "tok"
    assert multi30k_tok("write", str(multi30k_dir), str(out)).returncode == 0
    hypotheses = tmp_path / "hyp.de"
    tokenised = lines(out / "test_2016_flickr.de.gz")
    hypotheses.write_text("\n".join(tokenised[:500] + ["ein mann ."] * 500) + "\n", encoding="utf-8")
    done = multi30k_tok("score", str(hypotheses), str(reference), "--lang", "de")
    assert done.returncode == 0, done.stderr
    tokenized, raw = done.stdout.splitlines()[:2]
    assert tokenized.startswith("BLEU ") and "ref_len = 12103" in tokenized  # the papers' reference length
    assert raw.startswith("sacreBLEU ") and 30 < float(raw.split()[1]) < 90
    assert "case:lc" in done.stdout


def test_score_names_a_missing_file(tmp_path: Path) -> None:
    done = multi30k_tok("score", str(tmp_path / "none.de"), str(tmp_path / "ref.de"), "--lang", "de")
    assert done.returncode == 2 and "none.de: no such file" in done.stderr
