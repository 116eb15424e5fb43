"""Memory and speed at corpus scale: corpora of 100k, 1M and 5M pairs (Tatoeba de-en, 161k pairs,
repeated and shuffled), each prepared (`aiayn prepare`) and trained on for 50 steps (`aiayn train
--data`). Prints prepare throughput (pairs/s) and the peak RSS of each `prepare` and `train`
process, the ratio of train's peak at the largest size to that at the smallest, and
fairseq-preprocess on the same 1M-pair corpus (the peer harness, bench/peers.sh) in the same run.

    .venv/bin/python bench/scale.py                      # ~20 min on 2 cores; results in bench/out/scale.json
    .venv/bin/python bench/scale.py --sizes 20000,100000 --steps 5 --preset tiny    # a quick look
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aiayn.files import remove_tree

ROOT = Path(__file__).resolve().parents[1]
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-de-en"
FAIRSEQ = ROOT / "bench" / ".peers" / ".venv" / "bin" / "fairseq-preprocess"
MARK = ".aiayn-scale-bench"  # names a --work folder this bench made, whose contents it may delete


def claim(work: Path) -> None:
    """Work only in a folder this bench made: a new or empty one (then marked), or one it marked on an
    earlier run. Each run deletes and rebuilds its own outputs there, to measure them afresh."""
    if work.is_dir() and any(work.iterdir()) and not (work / MARK).is_file():
        print(f"bench/scale.py: error: --work {work}: not empty and not made by this bench; give a new or "
              "empty folder", file=sys.stderr)
        sys.exit(2)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARK).write_text("made by bench/scale.py, which deletes and rebuilds what it wrote here\n")


def discard(path: Path) -> None:
    """Delete an output of an earlier run (inside a claimed --work folder), so it is measured afresh."""
    if path.exists():
        remove_tree(path)


def run(command: list[str], log: Path) -> tuple[float, float]:
    """Run a command to completion; returns (seconds, peak RSS in MiB) of that process and the
    children it waited for. GNU time measures it: a child forked from this (large) process would
    report this process's RSS at the fork as its own peak."""
    peak = log.with_suffix(".maxrss")
    started = time.perf_counter()
    with open(log, "w") as out:
        status = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", str(peak), *command], stdout=out,
                                 stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "2"})
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed: see {log}")
    return seconds, int(peak.read_text().split()[-1]) / 1024  # GNU time reports KiB


def build_corpus(size: int, folder: Path, seed: int = 1) -> tuple[Path, Path]:
    """`size` pairs of Tatoeba de-en, the corpus repeated in a new random order each time round."""
    src, tgt = folder / "train.de", folder / "train.en"
    if src.is_file() and tgt.is_file():
        return src, tgt
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(TATOEBA / "train.de.gz", "rt", encoding="utf-8") as f:
        de = f.read().splitlines()
    with gzip.open(TATOEBA / "train.en.gz", "rt", encoding="utf-8") as f:
        en = f.read().splitlines()
    rng = np.random.default_rng(seed)
    written = 0
    partial = {path: path.parent / f"{path.name}.partial" for path in (src, tgt)}
    with open(partial[src], "w", encoding="utf-8") as s, open(partial[tgt], "w", encoding="utf-8") as t:
        while written < size:
            for i in rng.permutation(len(de))[: size - written]:
                s.write(de[i] + "\n")
                t.write(en[i] + "\n")
            written = min(size, written + len(de))
    for path, temporary in partial.items():
        temporary.replace(path)
    return src, tgt


def fairseq_preprocess(data: Path, src: Path, tgt: Path, work: Path, workers: int) -> dict:
    """fairseq-preprocess on the corpus tokenised with the same SentencePiece model (timed apart)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(data / "tokenizer.model"))
    started = time.perf_counter()
    for path, lang in ((src, "de"), (tgt, "en")):
        with open(path, encoding="utf-8") as f, open(work / f"train.{lang}", "w", encoding="utf-8") as out:
            while lines := f.readlines(1 << 24):
                out.writelines(" ".join(p) + "\n" for p in sp.encode([line.rstrip("\n") for line in lines], out_type=str,
                                                                     num_threads=workers))
    encode_seconds = time.perf_counter() - started
    discard(work / "bin")  # fairseq refuses to write over its output of an earlier run of this bench
    seconds, rss = run([str(FAIRSEQ), "--source-lang", "de", "--target-lang", "en", "--trainpref", str(work / "train"),
                        "--destdir", str(work / "bin"), "--joined-dictionary", "--workers", str(workers)],
                       work / "fairseq-preprocess.log")
    return {"encode_seconds_spm": round(encode_seconds, 1), "seconds": round(seconds, 1), "peak_rss_mib": round(rss)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000,5000000")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch-tokens", type=int, default=9000)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fairseq-size", type=int, default=1_000_000, help="0: skip the fairseq comparison")
    ap.add_argument("--work", default="bench/out/scale")
    ap.add_argument("--out", default="bench/out/scale.json")
    a = ap.parse_args()
    work = Path(a.work)
    claim(work)
    aiayn = [sys.executable, "-m", "aiayn"]
    results: dict = {"sizes": {}, "steps": a.steps, "preset": a.preset, "batch_tokens": a.batch_tokens,
                     "workers": a.workers}
    for size in map(int, a.sizes.split(",")):
        folder = work / str(size)
        src, tgt = build_corpus(size, folder / "text")
        for name in ("data", "run"):  # a re-run of prepare on the same inputs would write (and time) nothing
            discard(folder / name)
        seconds, prepare_rss = run([*aiayn, "prepare", "--out", str(folder / "data"), "--train-src", str(src),
                                    "--train-tgt", str(tgt), "--vocab-size", str(a.vocab_size),
                                    "--workers", str(a.workers)], folder / "prepare.log")
        _, train_rss = run([*aiayn, "train", "--out", str(folder / "run"), "--data", str(folder / "data"),
                            "--preset", a.preset, "--batch-tokens", str(a.batch_tokens), "--max-steps", str(a.steps),
                            "--save-every", str(10**6), "--eval-every", str(10**6), "--log-every", "10", "--bf16"],
                           folder / "train.log")
        results["sizes"][size] = {"prepare_seconds": round(seconds, 1), "prepare_pairs_per_s": round(size / seconds),
                                  "prepare_peak_rss_mib": round(prepare_rss), "train_peak_rss_mib": round(train_rss)}
        if size == a.fairseq_size and FAIRSEQ.is_file():
            (folder / "fairseq").mkdir(exist_ok=True)
            results["fairseq_preprocess"] = {"size": size, **fairseq_preprocess(folder / "data", src, tgt,
                                                                                folder / "fairseq", a.workers)}
        print(f"{size:>9,} pairs: prepare {seconds:6.1f} s ({size / seconds:8,.0f} pairs/s, peak RSS "
              f"{prepare_rss:5.0f} MiB); train {a.steps} steps peak RSS {train_rss:5.0f} MiB", flush=True)
    sizes = sorted(results["sizes"])
    ratio = results["sizes"][sizes[-1]]["train_peak_rss_mib"] / results["sizes"][sizes[0]]["train_peak_rss_mib"]
    results["train_rss_ratio_largest_to_smallest"] = round(ratio, 3)
    print(f"train peak RSS at {sizes[-1]:,} pairs / at {sizes[0]:,} pairs: {ratio:.3f}x")
    if "fairseq_preprocess" in results:
        f = results["fairseq_preprocess"]
        ours = results["sizes"][f["size"]]
        print(f"fairseq-preprocess on {f['size']:,} pairs (already tokenised; SentencePiece encoding took "
              f"{f['encode_seconds_spm']} s more): {f['seconds']} s = {f['size'] / f['seconds']:,.0f} pairs/s, "
              f"peak RSS {f['peak_rss_mib']} MiB; aiayn prepare (vocabulary + encoding + arrays): "
              f"{ours['prepare_seconds']} s, peak RSS {ours['prepare_peak_rss_mib']} MiB")
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
