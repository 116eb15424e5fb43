"""Data-parallel training under torchrun (gloo on the CPU): the same updates as accumulation in one
process, exact resume, two "nodes" on 127.0.0.1, and a killed process."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aiayn import checkpoint

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# Adam's update divides by sqrt(v) + eps: with the paper's eps (1e-9), the sign of a gradient that
# is zero up to float rounding (and so differs between two orders of summation) moves a weight by a
# whole learning rate. A larger eps compares the gradients themselves.
TRAIN = ["train", "--preset", "tiny", "--dropout", "0", "--batch-tokens", "600", "--warmup", "20",
         "--adam-eps", "1e-4", "--eval-every", "1000", "--log-every", "2"]


@pytest.fixture(scope="module")
def data(number_corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aiayn.data.prepared import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("ddp") / "data"
    prepare(out, str(number_corpus["train_en"]), str(number_corpus["train_de"]), options=PrepareOptions(vocab_size=300),
            log=lambda message: None)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    launcher = [*TORCHRUN, "--nproc-per-node", str(nproc), *(extra or ("--standalone",))]
    return subprocess.Popen([*launcher, "-m", "aiayn", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def aiayn(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "aiayn", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_make_the_updates_of_one_accumulating_two_batches(data: Path, tmp_path: Path) -> None:
    common = [*TRAIN, "--data", str(data), "--max-steps", "8", "--save-every", "4"]
    finish(torchrun(*common, "--out", str(tmp_path / "ddp")))
    aiayn(*common, "--out", str(tmp_path / "accumulate"), "--accumulate", "2")
    ddp, accumulated = weights(tmp_path / "ddp", 8), weights(tmp_path / "accumulate", 8)
    moved = largest_difference(ddp, weights(tmp_path / "ddp", 4))
    assert largest_difference(ddp, accumulated) < 1e-5 and moved > 1e-2
    state, _ = checkpoint.load_training_state(tmp_path / "ddp" / "checkpoints" / "step_00000008")
    reference, _ = checkpoint.load_training_state(tmp_path / "accumulate" / "checkpoints" / "step_00000008")
    assert (state["epoch"], state["batch"], state["tokens"]) == (reference["epoch"], reference["batch"],
                                                               reference["tokens"])
    # Logs count every process's tokens once.
    assert (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[1][:60] == \
        (tmp_path / "accumulate" / "metrics.jsonl").read_text().splitlines()[1][:60]


def test_resume_under_torchrun_is_exact(data: Path, tmp_path: Path) -> None:
    common = [*TRAIN, "--data", str(data), "--dropout", "0.1", "--save-every", "3"]  # dropout: per-process RNG
    finish(torchrun(*common, "--out", str(tmp_path / "straight"), "--max-steps", "9"))
    finish(torchrun(*common, "--out", str(tmp_path / "resumed"), "--max-steps", "3"))
    output = finish(torchrun("train", "--resume", str(tmp_path / "resumed"), "--max-steps", "9"))
    assert "resumed from" in output
    a, b = weights(tmp_path / "straight", 9), weights(tmp_path / "resumed", 9)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_nodes_on_one_machine_train_as_one_node(data: Path, tmp_path: Path) -> None:
    common = [*TRAIN, "--data", str(data), "--max-steps", "6", "--save-every", "6"]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [torchrun(*common, "--out", str(tmp_path / "two_nodes"), nproc=1,
                      extra=("--nnodes", "2", "--node-rank", str(rank), "--rdzv-backend", "c10d",
                             "--rdzv-endpoint", endpoint, "--rdzv-id", "test"))
             for rank in (0, 1)]
    for node in nodes:
        finish(node)
    finish(torchrun(*common, "--out", str(tmp_path / "one_node")))
    assert largest_difference(weights(tmp_path / "two_nodes", 6), weights(tmp_path / "one_node", 6)) < 1e-6


def test_a_killed_process_stops_the_run_which_then_resumes(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    launcher = torchrun(*TRAIN, "--data", str(data), "--out", str(run), "--max-steps", "100000", "--save-every", "5")
    deadline = time.time() + 120
    while not checkpoint.step_checkpoints(run):
        assert launcher.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[-1]), signal.SIGKILL)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "SIGKILL" in output or "Signal 9" in output or "exitcode" in output, output[-2000:]
    last = checkpoint.step_checkpoints(run)[-1]
    checkpoint.load_checkpoint(last)  # complete and loadable
    step = checkpoint.step_of(last)
    output = finish(torchrun("train", "--resume", str(run), "--max-steps", str(step + 4)))
    assert f"resumed from {last}" in output and f"step_{step + 4:08d}" in str(checkpoint.step_checkpoints(run)[-1])


def test_a_run_resumes_with_another_number_of_processes(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    finish(torchrun(*TRAIN, "--data", str(data), "--out", str(run), "--max-steps", "3", "--save-every", "3"))
    output = aiayn("train", "--resume", str(run), "--max-steps", "5")
    assert "written by 2 processes, this run has 1" in output
    state, _ = checkpoint.load_training_state(run / "checkpoints" / "step_00000005")
    assert state["world_size"] == 1 and state["step"] == 5


def test_one_process_under_torchrun_runs_ddp_and_trains_as_a_plain_process(data: Path, tmp_path: Path) -> None:
    common = [*TRAIN, "--data", str(data), "--max-steps", "6", "--save-every", "6"]
    output = finish(torchrun(*common, "--out", str(tmp_path / "torchrun"), nproc=1))
    assert "data-parallel: 1 process(es), gloo, DDP" in output  # the path NCCL takes on one GPU
    assert "broadcast_buffers" not in output  # DDP's keyword of this torch: no deprecation warning
    aiayn(*common, "--out", str(tmp_path / "plain"))
    assert largest_difference(weights(tmp_path / "torchrun", 6), weights(tmp_path / "plain", 6)) < 1e-6
