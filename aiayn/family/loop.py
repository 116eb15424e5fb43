"""One training loop for the Transformer's descendants (aiayn.model.family): the paper's Adam
(0.9, 0.98, 1e-9) and warm-up schedule (§5.3), bf16 autocast where asked, progress on stderr
(loss, examples/s, ETA), a stop after a number of steps or minutes, and an evaluation every
`eval_every` steps whose best state is the one kept: the current weights, or the mean of the last
few evaluated ones (§6.1's checkpoint averaging, which evens out the step-to-step noise of training)."""
from __future__ import annotations

import copy
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from aiayn.checkpoint import mean_state
from aiayn.data.batching import TokenBatches
from aiayn.errors import InputError, TrainingDiverged
from aiayn.runtime import check_device, keep_freed_memory
from aiayn.training.schedule import DECAYS, learning_rate, linear_decay_rate


MOST_AVERAGED = 100  # --average-last keeps a copy of the model per averaged state


@dataclass
class Schedule:
    max_steps: int | None = None
    time_budget_s: float | None = None  # seconds of training steps (evaluation not counted)
    warmup_steps: int = 400
    lr_scale: float = 1.0
    decay: str = "inverse-sqrt"  # §5.3's warm-up then 1/sqrt(step), or "linear": the warm-up times the budget left
    eval_every: int = 200
    average_last: int = 1  # evaluate the mean of the last N evaluated states (§6.1); 1: the current state alone
    log_every: int = 20
    bf16: bool = False
    seed: int = 1
    device: str = "cpu"  # where the steps run; the trained model comes back on the CPU

    def __post_init__(self) -> None:
        if not (self.max_steps or self.time_budget_s):
            raise InputError("no stopping rule: give --max-steps or --time-budget")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.time_budget_s is not None and not 0 < self.time_budget_s < math.inf:
            raise InputError(f"time_budget_s must be a positive number of seconds, got {self.time_budget_s}")
        for name in ("warmup_steps", "eval_every", "average_last", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.average_last > MOST_AVERAGED:
            raise InputError(f"average_last must be at most {MOST_AVERAGED}, got {self.average_last}")
        if not self.lr_scale > 0:
            raise InputError(f"lr_scale must be positive, got {self.lr_scale}")
        if self.decay not in DECAYS:
            raise InputError(f"decay {self.decay!r}: one of {', '.join(DECAYS)}")
        check_device(self.device)

    def rate(self, step: int, d_model: int, used: float) -> float:
        """The learning rate of `step` (from 1), `used` the fraction of the budget spent before it."""
        if self.decay == "linear":
            return linear_decay_rate(step, d_model, self.warmup_steps, self.lr_scale, used)
        return learning_rate(step, d_model, self.warmup_steps, self.lr_scale)


@dataclass
class Outcome:
    best_state: dict[str, Tensor]  # the weights that scored best (the last ones without evaluation)
    best_score: float | None
    steps: int
    seconds: float
    history: list[dict[str, Any]]


def fit(model: nn.Module, batches: Iterator[Any], loss_of: Callable[[nn.Module, Any], tuple[Tensor, int]],
        schedule: Schedule, evaluate: Callable[[nn.Module], float] | None = None, unit: str = "examples") -> Outcome:
    """Train `model` on `batches` until the schedule's stopping rule holds. `loss_of(model, batch)`
    gives the summed loss of a batch and how many items it holds (the loss is averaged over them);
    `evaluate(model)` a score, higher is better."""
    if evaluate is None and schedule.average_last > 1:
        raise InputError(f"--average-last {schedule.average_last}: nothing is validated to average (give --valid)")
    keep_freed_memory()
    model.to(schedule.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9, fused=True)
    best_state: dict[str, Tensor] | None = None
    best_score, history = None, []
    recent: deque[dict[str, Tensor]] = deque(maxlen=schedule.average_last)
    steps, seconds, window_loss, window_items, window_seconds = 0, 0.0, 0.0, 0, 0.0
    total = schedule.max_steps or math.inf
    bar = tqdm(total=1000, file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30,
               bar_format="{percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}")

    def used() -> float:
        return max(steps / total, seconds / schedule.time_budget_s if schedule.time_budget_s else 0.0)

    def done() -> bool:
        return used() >= 1.0

    model.train()
    try:
        while not done():
            started = time.perf_counter()
            rate = schedule.rate(steps + 1, model.config.d_model, used())
            loss_value, items = _update(model, optimizer, next(batches), loss_of, schedule.bf16, steps + 1, rate)
            elapsed = time.perf_counter() - started
            steps, seconds = steps + 1, seconds + elapsed
            window_loss, window_items = window_loss + loss_value, window_items + items
            window_seconds += elapsed
            bar.update(int(1000 * min(used(), 1.0)) - bar.n)
            if steps % schedule.log_every == 0 or done():
                record = {"step": steps, "loss": window_loss / max(window_items, 1),
                          f"{unit}_per_s": window_items / window_seconds, "train_seconds": seconds}
                history.append(record)
                bar.set_postfix_str(f"step {steps} loss {record['loss']:.3f} {record[f'{unit}_per_s']:,.0f} {unit}/s",
                                    refresh=False)
                window_loss, window_items, window_seconds = 0.0, 0, 0.0
            if evaluate is not None and (steps % schedule.eval_every == 0 or done()):
                recent.append(copy.deepcopy(model.state_dict()))  # deepcopy keeps tied weights tied
                candidate = recent[0] if len(recent) == 1 else mean_state(recent)
                score = _score(model, candidate, recent[-1], evaluate, schedule.bf16)
                history.append({"step": steps, "score": score, "averaged": len(recent), "train_seconds": seconds})
                tqdm.write(f"step {steps}: {score:.4f}" + (f" (mean of the last {len(recent)} states)"
                                                           if len(recent) > 1 else ""), file=sys.stderr)
                if best_score is None or score > best_score:
                    best_state, best_score = candidate, score
    finally:
        bar.close()
    model.cpu().eval()
    if evaluate is None:
        best_state = copy.deepcopy(model.state_dict())
    best_state = {name: value.cpu() for name, value in best_state.items()}
    return Outcome(best_state, best_score, steps, seconds, history)


def _score(model: nn.Module, candidate: dict[str, Tensor], current: dict[str, Tensor],
           evaluate: Callable[[nn.Module], float], bf16: bool) -> float:
    """`evaluate` on the weights `candidate`, then the model back in training with its `current` weights."""
    device = next(model.parameters()).device
    try:
        if candidate is not current:
            model.load_state_dict(candidate)
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return evaluate(model)
    finally:
        if candidate is not current:
            model.load_state_dict(current)
        model.train()


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any,
            loss_of: Callable[[nn.Module, Any], tuple[Tensor, int]], bf16: bool, step: int,
            rate: float) -> tuple[float, int]:
    """One step of Adam on one batch at the learning rate `rate`: the batch's summed loss and items."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss_sum, items = loss_of(model, batch)
    (loss_sum / max(items, 1)).backward()
    loss_value = loss_sum.item()
    gradient_norm = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
    if not (math.isfinite(loss_value) and math.isfinite(gradient_norm)):
        raise TrainingDiverged(f"the loss or its gradient became NaN or infinite at step {step}: lower --lr-scale")
    for group in optimizer.param_groups:
        group["lr"] = rate
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value, items


def length_batches(rows: list[list[int]], batch_tokens: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices in batches of similar length (§5.1), at most `batch_tokens` tokens with padding,
    shuffled anew every epoch, epoch after epoch."""
    lengths = np.array([len(row) for row in rows])
    if len(rows) and batch_tokens < lengths.max():
        raise InputError(f"--batch-tokens {batch_tokens}: smaller than the longest sentence ({lengths.max()} "
                         "subwords with [CLS] or <s>); give at least that many")
    batches = TokenBatches(lengths, np.zeros_like(lengths), batch_tokens, seed)

    def epoch(e: int) -> list[np.ndarray]:
        plan = batches.epoch(e)
        return [plan[k] for k in range(len(plan))]
    return forever(epoch)


def forever(make_epoch: Callable[[int], list[Any]]) -> Iterator[Any]:
    """The batches of epoch 0, then of epoch 1, and so on."""
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1
