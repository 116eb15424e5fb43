"""Training throughput on a GPU: preset `base` (Table 3) on a synthetic corpus for a few minutes,
with bf16 autocast; prints target tokens/s and MFU (model FLOPs utilisation: the matrix
multiplications of forward and backward, counted from the model's shapes and the data's lengths,
against the GPU's dense bf16 peak).

    bash bench/gpu.sh                              # one GPU: base, 25,000-token batches, 3 minutes
    bash bench/gpu.sh --compile --minutes 5
    .venv/bin/python bench/gpu.py --device cpu --preset tiny --minutes 0.2 --peak-tflops 0.4   # a dry run

The corpus is random "sentences" over a pseudo-word vocabulary, prepared with `aiayn prepare` as
any corpus would be, so the run exercises the whole path: prepared data, pinned transfers, fused
Adam, the §5.3 schedule. Extra arguments after the known ones go to `aiayn train` (e.g. torchrun is
not used here; for several GPUs run `torchrun --nproc_per_node N -m aiayn train ...` by hand).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

# Dense bf16 peak (TFLOP/s) by device name, from the vendors' data sheets; the first match counts.
PEAKS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0,
         "A10": 125.0}


def synthetic_corpus(folder: Path, pairs: int, seed: int = 1) -> tuple[Path, Path]:
    """Pairs of random sentences (5-60 words from 30,000 pseudo-words), the target about as long as the source."""
    src, tgt = folder / "train.src", folder / "train.tgt"
    if src.is_file() and tgt.is_file():
        return src, tgt
    folder.mkdir(parents=True, exist_ok=True)
    partial = {path: path.parent / f"{path.name}.partial" for path in (src, tgt)}
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(30_000)]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    with open(partial[src], "w") as s, open(partial[tgt], "w") as t:
        for _ in range(pairs):
            n = int(rng.integers(5, 61))
            s.write(" ".join(words[i] for i in rng.choice(len(words), n, p=zipf)) + "\n")
            t.write(" ".join(words[i] for i in rng.choice(len(words), max(3, n + int(rng.integers(-5, 6))), p=zipf)) + "\n")
    for path, temporary in partial.items():  # a killed run leaves no half-written corpus to reuse
        temporary.replace(path)
    return src, tgt


def training_flops_per_target_token(config: dict, src_per_tgt: float, src_len: float, tgt_len: float) -> float:
    """Forward + backward (3 x forward) multiply-adds x 2 of one target token and its share of source tokens."""
    d, f, v = config["d_model"], config["d_ff"], config["vocab_size"]
    encoder_per_source = config["n_encoder_layers"] * (4 * d * d + 2 * d * f + 2 * src_len * d)
    decoder_per_target = config["n_decoder_layers"] * (4 * d * d + 2 * tgt_len * d  # masked self-attention
                                                       + 2 * d * d + 2 * src_len * d  # cross: W_q, W_o, scores, values
                                                       + 2 * d * f) + d * v  # feed-forward; output projection
    cross_keys_per_source = config["n_decoder_layers"] * 2 * d * d  # W_k, W_v of the encoder output
    forward = decoder_per_target + src_per_tgt * (encoder_per_source + cross_keys_per_source)
    return 3 * 2 * forward


def run_bounded(command: Sequence[str], timeout: float | None = None, **popen) -> str | None:
    """subprocess.run(check=True), whose timeout (or Ctrl-C) ends the command's whole process group:
    torchrun's workers, the compiler's and `aiayn prepare`'s worker processes, not the command alone.
    Returns its stdout when `popen` asks for it (stdout=subprocess.PIPE)."""
    process = subprocess.Popen(command, start_new_session=True, **popen)
    try:
        out, _ = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, out)
    return out


def prepared_synthetic(work: Path, pairs: int, vocab_size: int = 32000, timeout: float | None = None) -> Path:
    """The synthetic corpus, prepared (`aiayn prepare` finds it up to date on a second call)."""
    src, tgt = synthetic_corpus(work / "text", pairs)
    data = work / "data"
    run_bounded([sys.executable, "-m", "aiayn", "prepare", "--out", str(data), "--train-src", str(src),
                 "--train-tgt", str(tgt), "--vocab-size", str(vocab_size)], timeout)
    return data


def device_peak(device: str) -> float:
    """The device's dense bf16 peak in TFLOP/s, by its name."""
    import torch

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else ""
    peak = next((value for key, value in PEAKS.items() if key in name), None)
    if peak is None:
        raise RuntimeError(f"unknown bf16 peak for device {name or device!r}: give --peak-tflops")
    return peak


def measure_training(data: Path, run: Path, preset: str, device: str, batch_tokens: int, budget: Sequence[str],
                     compile: bool, peak: float, extra: Sequence[str] = (), launcher: list[str] | None = None,
                     timeout: float | None = None, log_every: int = 20) -> dict:
    """Train `preset` on prepared `data` (bf16) within `budget` (`--time-budget M` or `--max-steps N`)
    and read target tokens/s, model TFLOP/s and MFU off its log; `launcher` (e.g. torchrun) replaces
    `python -m`. The training's output goes to RUN.log."""
    command = [*(launcher or [sys.executable, "-m"]), "aiayn", "train", "--out", str(run), "--overwrite",
               "--data", str(data), "--preset", preset, "--device", device, "--bf16", "--batch-tokens",
               str(batch_tokens), *budget, "--log-every", str(log_every), "--save-every", str(10**7),
               "--eval-every", str(10**7), *(["--compile"] if compile else []), *extra]
    with open(run.with_suffix(".log"), "w") as log:
        run_bounded(command, timeout, stdout=log, stderr=subprocess.STDOUT)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "tokens_per_s" in r]
    steps = logged[2:]  # the first windows hold start-up and compilation
    if not steps:
        raise RuntimeError(f"{run}: too few steps logged to measure ({len(logged)} windows): give a larger budget")
    tokens_per_s = float(np.mean([r["tokens_per_s"] for r in steps]))
    manifest = json.loads((data / "manifest.json").read_text())["train"]
    config = json.loads((run / "config.json").read_text())["model"]
    src_len, tgt_len = manifest["source_tokens"] / manifest["pairs"] + 1, manifest["target_tokens"] / manifest["pairs"] + 1
    flops = training_flops_per_target_token(config, src_len / tgt_len, src_len, tgt_len) * tokens_per_s
    return {"preset": preset, "device": device, "batch_tokens": batch_tokens, "compile": compile,
            "target_tokens_per_s": round(tokens_per_s), "model_tflops_per_s": round(flops / 1e12, 2),
            "peak_tflops": peak, "mfu": round(flops / 1e12 / peak, 4), "steps_measured": len(steps),
            "steps": logged[-1]["step"], "first_step_seconds": logged[0].get("first_step_seconds"),
            "compiled_graphs": logged[-1].get("compiled_graphs")}


def positive(kind: type):
    """An argparse type: a positive int or float (bad values exit 2 with one line)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value
    return parse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="base")
    ap.add_argument("--batch-tokens", type=positive(int), default=25_000)
    ap.add_argument("--minutes", type=positive(float), default=3.0)
    ap.add_argument("--pairs", type=positive(int), default=200_000)
    ap.add_argument("--peak-tflops", type=positive(float), help="the device's dense bf16 peak (default: by its name)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--work", default="bench/out/gpu")
    a, extra = ap.parse_known_args()
    work = Path(a.work)
    try:
        peak = a.peak_tflops or device_peak(a.device)
    except (RuntimeError, ValueError) as error:
        ap.error(str(error))
    data = prepared_synthetic(work, a.pairs)
    result = measure_training(data, work / f"run_{a.preset}", a.preset, a.device, a.batch_tokens,
                              ["--time-budget", str(a.minutes)], a.compile, peak, extra)
    print(json.dumps(result, indent=1))
    (work / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
