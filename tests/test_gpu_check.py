"""bench/gpu_check.sh, the one command for a lent GPU, dry-run on the CPU (preset tiny, seconds a
stage): every stage runs and reports, so that a GPU's scarce minutes are not lost to a broken script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"})


def test_the_gpu_check_dry_runs_every_stage_on_the_cpu(multi30k_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "check"
    done = gpu_check("--dry-run", "--multi30k", str(multi30k_dir), "--work", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((work / "gpu_check.json").read_text())
    assert result["errors"] == {}, result["errors"]
    for stage in ("eager", "compiled"):
        assert result[stage]["target_tokens_per_s"] > 0 and 0 < result[stage]["mfu"]
    assert result["compiled"]["first_step_seconds"] > 0 and result["compiled"]["compiled_graphs"] == 1
    assert result["multi30k"]["steps"] > 0 and "test_sacrebleu_beam4" in result["multi30k"]
    assert {"aiayn_bf16_beam4", "hf_bf16_beam4", "aiayn_beam4"} <= set(result["decoding"])
    assert result["decoding"]["aiayn_bf16_beam4"]["speedup_vs_hf_bf16_beam4"] > 0
    assert result["profile"]["host_ms_per_step"] > 0 and (work / "profile.txt").read_text().count("\n") > 15
    assert "1 process(es), gloo, DDP" in result["torchrun"]["process_group"]
    assert set(result["acceptance"]) == {"mfu_compiled_at_least_0.40", "mfu_eager_at_least_0.25",
                                         "first_compiled_step_within_90_s", "bf16_beam4_at_least_3x_hf_bf16",
                                         "bf16_beam4_at_least_1.5x_float32"}
    assert json.dumps(result, indent=1) in done.stdout  # the JSON is printed too


def test_the_gpu_check_works_only_in_a_folder_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    done = gpu_check("--dry-run", "--work", str(tmp_path))
    assert done.returncode == 2 and "not empty and not a folder of this check" in done.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_bad_arguments_end_with_one_line_and_relative_paths_are_the_callers(multi30k_dir: Path,
                                                                            tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    for args, says in ((["--work", str(tmp_path / "w")], "--multi30k: give the folder"),
                       (["--multi30k", str(tmp_path)], "no test_2016_flickr.en.gz there"),
                       # a relative --multi30k is found from the caller's folder; then --work is refused
                       (["--multi30k", multi30k_dir.name, "--work", str(tmp_path / "a_file")], "is a file")):
        done = gpu_check(*args, cwd=multi30k_dir.parent)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
