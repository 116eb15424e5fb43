"""Issue 20's GPU figures in one command, for a lent GPU (under 8 minutes on one H100/H200), with
the machine's own Python (torch, transformers, sentencepiece, sacrebleu; sacremoses carried as a
wheel where it is missing: bench/gpu_check.sh installs wheels found in .whl/). Stages that no
longer fit in the budget are skipped, and say so in the JSON.

    bash bench/gpu_check.sh --multi30k DIR                 # DIR: Multi30k's raw files (train/val/test_2016_flickr)
    bash bench/gpu_check.sh --multi30k DIR --dry-run       # on the CPU, preset tiny, in seconds: checks the script

Stages, most wanted first, each in processes of its own with a time limit, so that one failing or
slow stage costs only itself (its error goes into the JSON):
1. training MFU of preset base at 25,000-token batches, bf16, eager (bench/gpu.py's synthetic corpus);
2. the same compiled: MFU, seconds to the first compiled step, graphs compiled;
3. Multi30k en->de, preset base, 3 minutes of training, then test_2016_flickr BLEU, greedy and
   beam 4 (sacreBLEU, and tokenised lowercased BLEU when sacremoses is there);
4. decoding test_2016_flickr with that model (bench/decode.py --device cuda): aiayn float32 and
   bfloat16, Hugging Face `generate` float32 and bfloat16 on the same weights, greedy and beam 4;
5. a torch.profiler table of the 15 costliest kernels of a training step, host and device time per step;
6. `torchrun --nproc_per_node 1`: the DDP path over NCCL.
Writes WORK/gpu_check.json (printed at the end) and WORK/profile.txt; WORK (default
bench/out/gpu_check beside this script) holds the data and runs, and must be new, empty, or an
earlier check's (whose files it replaces).
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from gpu import device_peak, measure_training, prepared_synthetic, run_bounded  # noqa: E402  (bench/gpu.py, beside this file)

MARKER = ".aiayn-gpu-check"  # marks WORK as this script's own


@dataclass(frozen=True)
class Settings:
    device: str = "cuda"
    preset: str = "base"
    batch_tokens: int = 25_000
    synthetic_pairs: int = 60_000
    vocab_size: int = 32_000
    train_budget: tuple[str, ...] = ("--time-budget", "0.75")  # of training steps, eager and compiled each
    log_every: int = 20
    multi30k_preset: str = "base"
    multi30k_budget: tuple[str, ...] = ("--time-budget", "3")
    multi30k_flags: tuple[str, ...] = ("--batch-tokens", "12000", "--dropout", "0.3", "--warmup", "1000",
                                       "--eval-every", "500")
    multi30k_vocab: int = 8000
    decode_limit: int = 0  # test sentences decoded (0: all 1,000)
    profile_steps: int = 10
    torchrun_budget: tuple[str, ...] = ("--time-budget", "0.3")
    peak_tflops: float | None = None  # by the GPU's name
    stage_seconds: tuple[tuple[str, int], ...] = (("eager", 150), ("compiled", 240), ("multi30k", 330),
                                                  ("decoding", 180), ("profile", 120), ("torchrun", 120))
    budget_seconds: int = 470  # all stages together (under 8 minutes with start-up); a stage with too little left is skipped


# The dry run counts steps, not minutes, so that a slow or busy machine still logs enough of them.
DRY_RUN = Settings(device="cpu", preset="tiny", batch_tokens=2000, synthetic_pairs=2000, vocab_size=1000,
                   train_budget=("--max-steps", "24"), log_every=4, multi30k_preset="tiny",
                   multi30k_budget=("--max-steps", "24"),
                   multi30k_flags=("--batch-tokens", "2000", "--eval-every", "20", "--bleu-sentences", "20"),
                   multi30k_vocab=1000, decode_limit=24, profile_steps=3, torchrun_budget=("--max-steps", "12"),
                   peak_tflops=0.4, budget_seconds=900)


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


class Check:
    def __init__(self, work: Path, settings: Settings, multi30k: Path | None):
        self.work, self.settings, self.multi30k = work, settings, multi30k
        self.result: dict = {"settings": asdict(settings), "errors": {}, "seconds": {}}
        self.started = time.monotonic()

    def stage(self, name: str, run) -> None:
        """Run one stage in the time left to it; its result, or its error, goes into the JSON."""
        limit = dict(self.settings.stage_seconds)[name]
        left = self.settings.budget_seconds - (time.monotonic() - self.started)
        if left < min(60, limit / 2):
            self.result["errors"][name] = f"skipped: {left:.0f} s left of the check's budget"
            return
        began = time.monotonic()
        print(f"== {name} (at most {min(limit, left):.0f} s)", flush=True)
        try:
            self.result[name] = run(min(limit, left))
        except (Exception, SystemExit) as error:  # noqa: BLE001 - one stage's failure is reported, the others run
            self.result["errors"][name] = "".join(traceback.format_exception_only(error)).strip()[-2000:]
            print(f"   {name} failed: {self.result['errors'][name]}", flush=True)
        self.result["seconds"][name] = round(time.monotonic() - began, 1)

    # ------------------------------------------------------------------ stages
    def synthetic(self, timeout: float) -> Path:
        return prepared_synthetic(self.work / "synthetic", self.settings.synthetic_pairs, self.settings.vocab_size,
                                  timeout)

    def training(self, compiled: bool, timeout: float) -> dict:
        s = self.settings
        run = self.work / ("run_compiled" if compiled else "run_eager")
        return measure_training(self.synthetic(timeout), run, s.preset, s.device, s.batch_tokens, s.train_budget, compiled,
                                self.peak, timeout=timeout, log_every=s.log_every)

    def multi30k_run(self, timeout: float) -> dict:
        s, m30k = self.settings, self.require_multi30k()
        run = self.work / "multi30k_en_de"
        command = python_module("aiayn", "train", "--out", str(run), "--overwrite", "--multi30k", "en-de",
                                "--data-dir", str(m30k), "--vocab-size", str(s.multi30k_vocab),
                                "--preset", s.multi30k_preset, "--device", s.device, "--bf16",
                                *s.multi30k_budget, "--save-every", str(10**7),
                                *s.multi30k_flags)
        log, started = run.with_suffix(".log"), time.monotonic()
        with open(log, "w") as out:
            run_bounded(command, timeout, stdout=out, stderr=subprocess.STDOUT)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        trained = [r for r in records if "train_loss" in r]
        valid = [r for r in records if "valid_bleu" in r]
        result = {"recipe": ["--preset", s.multi30k_preset, "--bf16", *s.multi30k_budget, *s.multi30k_flags],
                  "steps": trained[-1]["step"], "train_seconds": round(trained[-1]["train_seconds"], 1),
                  "target_tokens_per_s": round(sum(r["tokens_per_s"] for r in trained[2:] or trained)
                                               / len(trained[2:] or trained)),
                  "valid_bleu": [(r["step"], round(r["valid_bleu"], 2)) for r in valid],
                  "validation_share": next((line.strip() for line in log.read_text().splitlines()
                                            if line.startswith("validation took")), None)}
        result.update(self.test_bleu(run, timeout - (time.monotonic() - started)))
        return result

    def test_bleu(self, run: Path, timeout: float) -> dict:
        """`aiayn evaluate` on test_2016_flickr (its first decode_limit sentences), greedy and beam 4."""
        from aiayn.data.corpus import read_lines

        m30k, limit = self.require_multi30k(), self.settings.decode_limit or None
        files = {}
        for language in ("en", "de"):
            files[language] = self.work / f"test_2016_flickr.{language}"
            files[language].write_text("".join(line + "\n" for line in
                                               read_lines(m30k / f"test_2016_flickr.{language}.gz")[:limit]))
        scores: dict = {"test_sentences": len(read_lines(files["en"]))}
        for name, beam in (("greedy", 1), ("beam4", 4)):
            printed = run_bounded(python_module("aiayn", "evaluate", "--checkpoint", str(run), "--device",
                                                self.settings.device, "--src", str(files["en"]), "--ref",
                                                str(files["de"]), "--lang", "de", "--beam", str(beam)),
                                  max(timeout, 1), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            scores[f"test_sacrebleu_{name}"] = float(re.search(r"^sacreBLEU\s+BLEU = ([\d.]+)", printed, re.M)[1])
            scores[f"test_tokenised_bleu_{name}"] = float(re.search(r"^BLEU ([\d.]+) on Moses", printed, re.M)[1])
        return scores

    def decoding(self, timeout: float) -> dict:
        s, out = self.settings, self.work / "decode.json"
        command = [sys.executable, str(BENCH / "decode.py"), "--checkpoint", str(self.work / "multi30k_en_de"),
                   "--device", s.device, "--data", str(self.require_multi30k()), "--src", "en", "--tgt", "de",
                   "--repeats", "1", "--limit", str(s.decode_limit), "--out", str(out)]
        if s.device == "cpu":  # the dry run: the GPU's systems and batches, on the CPU
            command += ["--systems", "gpu", "--translator-batches"]
        out.unlink(missing_ok=True)
        with open(self.work / "decode.log", "w") as log:
            run_bounded(command, timeout, stdout=log, stderr=subprocess.STDOUT)
        systems = json.loads(out.read_text())["systems"]
        return {name: {key: value for key, value in figures.items() if key in ("sent_per_s", "tgt_tok_per_s", "bleu")
                       or key.startswith("speedup")} for name, figures in systems.items()}

    def profile(self, timeout: float) -> dict:
        table = self.work / "profile.txt"
        table.unlink(missing_ok=True)  # an earlier check's
        command = [sys.executable, str(BENCH / "gpu_profile.py"), "--run", str(self.work / "run_eager"),
                   "--steps", str(self.settings.profile_steps), "--table", str(table)]
        with open(self.work / "profile.log", "w") as log:
            printed = run_bounded(command, timeout, stdout=subprocess.PIPE, stderr=log, text=True)
        return json.loads(printed.strip().splitlines()[-1])

    def torchrun(self, timeout: float) -> dict:
        s = self.settings
        run = self.work / "run_torchrun"
        launcher = python_module("torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m")
        result = measure_training(self.synthetic(timeout), run, s.preset, s.device, s.batch_tokens, s.torchrun_budget, False,
                                  self.peak, launcher=launcher, timeout=timeout, log_every=s.log_every)
        lines = [line for line in run.with_suffix(".log").read_text().splitlines() if "data-parallel:" in line]
        return {**result, "process_group": lines[0].strip() if lines else "none (not under DDP)"}

    # ------------------------------------------------------------------ helpers
    @property
    def peak(self) -> float:
        return self.settings.peak_tflops or device_peak(self.settings.device)

    def require_multi30k(self) -> Path:
        if self.multi30k is None:
            raise RuntimeError("no --multi30k folder given")
        return self.multi30k

    def acceptance(self) -> dict:
        """Issue 20's GPU targets, each True, False or None (not measured)."""
        r = self.result

        def figure(*keys):
            value = r
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return value

        def at_least(value, bound):
            return None if value is None else value >= bound

        first = figure("compiled", "first_step_seconds")
        return {"mfu_compiled_at_least_0.40": at_least(figure("compiled", "mfu"), 0.40),
                "mfu_eager_at_least_0.25": at_least(figure("eager", "mfu"), 0.25),
                "first_compiled_step_within_90_s": None if first is None else first <= 90,
                "bf16_beam4_at_least_3x_hf_bf16": at_least(
                    figure("decoding", "aiayn_bf16_beam4", "speedup_vs_hf_bf16_beam4"), 3.0),
                "bf16_beam4_at_least_1.5x_float32": at_least(
                    figure("decoding", "aiayn_bf16_beam4", "speedup_vs_aiayn_beam4"), 1.5)}

    def run(self) -> dict:
        import torch

        device = self.settings.device
        self.result.update(gpu=torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
                           or "cpu", torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version())
        self.stage("eager", lambda t: self.training(False, t))
        self.stage("compiled", lambda t: self.training(True, t))
        self.stage("multi30k", self.multi30k_run)
        self.stage("decoding", self.decoding)
        self.stage("profile", self.profile)
        self.stage("torchrun", self.torchrun)
        self.result["acceptance"] = self.acceptance()
        self.result["total_seconds"] = round(time.monotonic() - self.started, 1)
        return self.result


def own_work_folder(work: Path) -> str | None:
    """WORK must be new, empty, or marked by an earlier check: nothing else of the user's is
    touched. Returns what is wrong with it, or marks it as the check's."""
    if work.exists() and not work.is_dir():
        return f"--work {work}: is a file, not a folder"
    if work.exists() and any(work.iterdir()) and not (work / MARKER).is_file():
        return f"--work {work}: not empty and not a folder of this check; give another"
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).touch()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--multi30k", type=Path, help="the folder of Multi30k's raw files (*.en.gz, *.de.gz)")
    ap.add_argument("--work", type=Path, default=BENCH / "out" / "gpu_check")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU, preset tiny, tiny budgets")
    a = ap.parse_args()
    if a.multi30k is None and not a.dry_run:
        ap.error("--multi30k: give the folder of Multi30k's raw files (stages 3-4 need it)")
    if a.multi30k is not None and not (a.multi30k / "test_2016_flickr.en.gz").is_file():
        ap.error(f"--multi30k {a.multi30k}: no test_2016_flickr.en.gz there (give Multi30k's raw folder)")
    problem = own_work_folder(a.work)
    if problem:
        ap.error(problem)
    result = Check(a.work, DRY_RUN if a.dry_run else Settings(), a.multi30k).run()
    text = json.dumps(result, indent=1)
    (a.work / "gpu_check.json").write_text(text)
    table = a.work / "profile.txt"
    if table.is_file():
        print(table.read_text())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
