"""A torch.profiler look at training steps of an existing run's configuration (bench/gpu_check.py
runs it on its eager MFU run): the 15 costliest kernels, and the host's and the device's time per
step. The host time is what Python takes to issue a step's work; when it nears the device time,
the GPU waits for Python.

    python bench/gpu_profile.py --run bench/out/gpu_check/run_eager --steps 10 --table profile.txt

Prints one JSON line last: steps, host_ms_per_step, device_ms_per_step, table (the file written).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from aiayn.data.prepared import PreparedData
from aiayn.errors import InputError
from aiayn.model import Transformer
from aiayn.training.distributed import Group
from aiayn.training.run import data_dir, load_run
from aiayn.training.trainer import Trainer
from aiayn.training.translation import TranslationTask


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (at least 1), after 3 unprofiled ones")
    ap.add_argument("--table", type=Path, required=True, help="a new file for the kernel table")
    a = ap.parse_args()
    if a.steps < 1:
        ap.error(f"--steps {a.steps}: give at least 1")
    if a.table.exists() or not a.table.parent.is_dir():
        ap.error(f"--table {a.table}: {'exists' if a.table.exists() else 'its folder does not exist'}")
    try:
        tokenizer, model_config, config = load_run(a.run)
    except InputError as error:
        ap.error(str(error))
    task = TranslationTask(Transformer(model_config), tokenizer, PreparedData(data_dir(a.run, config)), config)
    trainer = Trainer(a.run, task, config, Group())
    batches = [trainer.read_step(0, index) for index in range(a.steps + 3)]
    trainer.clock = time.perf_counter()
    for step in batches[:3]:  # warm-up: allocator, kernel choices
        trainer.train_step(step)
    synchronize(trainer.device)
    host = []
    on_gpu = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        for step in batches[3:]:
            issued = time.perf_counter()
            trainer.train_step(step)
            host.append(time.perf_counter() - issued)  # before waiting for the device
            synchronize(trainer.device)
        wall = time.perf_counter() - started
    table = profiler.key_averages().table(sort_by="self_cuda_time_total" if on_gpu else "self_cpu_time_total",
                                          row_limit=15)
    a.table.write_text(table)
    print(json.dumps({"steps": a.steps, "host_ms_per_step": round(1000 * sum(host) / len(host), 2),
                      "device_ms_per_step": round(1000 * wall / a.steps, 2), "table": str(a.table)}))


if __name__ == "__main__":
    main()
