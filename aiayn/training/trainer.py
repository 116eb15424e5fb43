"""The training engine (§5) for every kind of model (aiayn.training.task): a translator by teacher
forcing on prepared data, and the descendants of aiayn.model.family; in one process or
data-parallel over several (aiayn.training.distributed).

One optimizer update takes world_size x accumulate consecutive batches of the epoch's shuffled
sequence (each process its own `accumulate`), sums their gradients and divides by their total
items (a translator's target tokens; sentences, images or predicted tokens for the others),
counted over all processes. So a run of 2 processes and a run of one process with
`--accumulate 2` make the same updates. Process 0 alone validates, logs and writes checkpoints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aiayn import checkpoint
from aiayn.data.batching import LAYOUT, EpochPlan, TokenBatches
from aiayn.data.prepared import PreparedData
from aiayn.errors import InputError, TrainingDiverged
from aiayn.model import ModelConfig, Transformer
from aiayn.runtime import check_device, compiled_graphs, keep_freed_memory, use_cuda_kernels
from aiayn.training.config import Position, TrainConfig
from aiayn.training.distributed import Group
from aiayn.training.run import Metrics, create_run, data_dir, load_run, say
from aiayn.training.schedule import learning_rate, linear_decay_rate
from aiayn.training.task import Task
from aiayn.training.translation import TranslationTask


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as flat named tensors, for safetensors."""
    tensors = {}
    for index, parameter in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        for name, value in optimizer.state.get(parameter, {}).items():
            tensors[f"optimizer.{index}.{name}"] = value.detach().cpu()
    return tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for index, parameter in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        prefix = f"optimizer.{index}."
        state = {k[len(prefix):]: v.to(parameter.device) for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            optimizer.state[parameter] = state


# Fields a checkpoint of an earlier version lacks (their defaults then apply).
POSITION_FIELDS_ADDED = {"valid_seconds", "warmup_steps"}
# Without --warmup, the warm-up is this share of the steps the budget allows (the paper's: 4,000
# of 100,000), at most the paper's 4,000. Under a time budget alone the steps are estimated from
# the speed of the first FIT_AFTER steps, which warm up as the paper's 4,000 would begin.
WARMUP_SHARE, MOST_WARMUP, FIT_AFTER = 0.06, 4000, 20


def _position(state: dict[str, Any], path: Path) -> Position:
    """The Position a checkpoint recorded, checked field by field."""
    if "best_bleu" in state:  # before every kind trained here: BLEU, -1 for none yet
        best = state.pop("best_bleu")
        state["best_score"] = None if best == -1 else best
    fields = {f.name: f.type for f in dataclasses.fields(Position)}
    if set(state) - set(fields) or set(fields) - set(state) - POSITION_FIELDS_ADDED:
        raise checkpoint.CheckpointError(f"{path}: not a training position (fields {sorted(state)})")
    for name, value in state.items():
        if name == "best_score":
            bad = value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                         or not math.isfinite(value))
        else:
            wanted = (int,) if fields[name] == "int" else (int, float)
            bad = not isinstance(value, wanted) or isinstance(value, bool) or value < 0
        if bad:
            raise checkpoint.CheckpointError(f"{path}: bad {name} {value!r}")
    return Position(**state)


def no_buffer_sync_per_forward() -> dict[str, bool]:
    """DDP's keyword for "send no buffer at each forward": the sinusoid tables are the same in every
    process. Newer torch names it forward_sync_buffers and warns at broadcast_buffers (deprecated);
    with it the buffers are sent once, when DDP starts, which for identical tables changes nothing."""
    parameters = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}


class BatchStream:
    """The batches of epoch after epoch, from a position on; every process sees the same stream."""

    def __init__(self, task: Task, config: TrainConfig):
        self.task = task
        source, target = task.lengths()
        self.batches = TokenBatches(source, target, config.batch_tokens, seed=config.seed, widths=config.batch_widths)
        self.per_epoch = len(self.batches)  # batches in every epoch alike
        self.plan: tuple[int, EpochPlan] | None = None

    def epoch(self, epoch: int) -> EpochPlan:
        if self.plan is None or self.plan[0] != epoch:
            self.plan = (epoch, self.batches.epoch(epoch))
        return self.plan[1]

    def following(self, epoch: int, index: int) -> tuple[int, int]:
        """The position after batch `index` of `epoch`."""
        return (epoch, index + 1) if index + 1 < self.per_epoch else (epoch + 1, 0)

    def take(self, count: int, epoch: int, index: int) -> list[tuple[np.ndarray, tuple[int, int], tuple[int, int]]]:
        """`count` batches (row indices, the widths to pad them to, and where they are) from (epoch, index) on."""
        taken = []
        while len(taken) < count:
            plan = self.epoch(epoch)
            taken.append((plan[index], plan.width(index), (epoch, index)))
            epoch, index = self.following(epoch, index)
        return taken


class Trainer:
    def __init__(self, run_dir: Path, task: Task, config: TrainConfig, group: Group):
        if config.average_last > 1 and not task.validates:
            raise InputError(f"--average-last {config.average_last}: nothing is validated to average (give a "
                             "validation set)")
        self.run_dir, self.config, self.group, self.task = run_dir, config, group, task
        keep_freed_memory()
        self.device = group.device(config.device)
        use_cuda_kernels(self.device)
        self.model = task.model.to(self.device)
        # The model with its loss, as one module: DDP wraps it and torch.compile compiles it whole.
        self.objective = task.objective()
        wrapped = self.objective
        if group.active:
            # Gradients are views of DDP's all-reduce buckets: no copy in and out of them.
            wrapped = torch.nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                gradient_as_bucket_view=True, **no_buffer_sync_per_forward())
        self.ddp = wrapped if group.active else None
        if config.compile:
            # Dynamic shapes, and no "duck sizing": by default a source and a target of the same
            # length in the first batch are assumed equal for good, and the first batch where
            # they differ compiles a second graph.
            torch.fx.experimental._config.use_duck_shape = False
        self.forward = torch.compile(wrapped, dynamic=True) if config.compile else wrapped
        self.graphs_before = compiled_graphs() if config.compile else 0
        self.metrics = Metrics(run_dir)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.0, betas=(config.adam_beta1, config.adam_beta2),
                                          eps=config.adam_eps, fused=True)
        self.position = Position()
        self.stream = BatchStream(task, config)
        if group.is_main:
            if group.active:
                say(f"data-parallel: {group.world_size} process(es), {group.backend}, DDP")
            batches = self.stream.batches
            say(f"batches: {len(batches):,} an epoch in {len(batches.shapes())} shapes, "
                f"padding {batches.padding_share():.1%} of their tokens")
        self.valid = task.validates
        self.recent: deque[dict[str, torch.Tensor]] = deque(maxlen=config.average_last)  # validated states (§6.1)
        self.diverged = torch.zeros((), device=self.device)  # set on the device, looked at when it costs no sync
        self.checked_step = 0
        self.skipped_validation = False
        self.first_step_seconds: float | None = None

    # ------------------------------------------------------------------ checkpoints
    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Every process's random-number state (collective: all processes call it together)."""
        states = {f"rng.torch.{r}": s for r, s in enumerate(self.group.gather(torch.get_rng_state()))}
        if self.device.type == "cuda":
            cuda = self.group.gather(torch.cuda.get_rng_state(self.device))
            states.update({f"rng.cuda.{r}": s for r, s in enumerate(cuda)})
        return states

    def save(self) -> Path | None:
        self._settle()
        rng = self._rng_states()
        if not self.group.is_main:
            return None
        p = self.position
        path = checkpoint.save_checkpoint(
            self.run_dir / "checkpoints" / f"step_{p.step:08d}", self.model, self.task.tokenizer,
            extra_config=self._extra_config(),
            state={**dataclasses.asdict(p), "world_size": self.group.world_size, "batching": LAYOUT},
            state_tensors={**optimizer_tensors(self.optimizer), **rng})
        checkpoint.prune_checkpoints(self.run_dir, self.config.keep_last)
        return path

    def _extra_config(self) -> dict[str, Any]:
        return {**self.task.checkpoint_config(), "training": dataclasses.asdict(self.config)}

    def resume(self) -> None:
        if self.group.is_main:
            checkpoint.recover_checkpoints(self.run_dir)
        self.group.barrier()
        found = checkpoint.step_checkpoints(self.run_dir)
        if not found:
            if self.group.is_main:
                self.metrics.forget_after(0)
                say(f"no checkpoint in {self.run_dir}: starting from step 0")
            return
        latest = found[-1]
        steps = self.group.gather(torch.tensor([checkpoint.step_of(latest)], device=self.device))
        if len({int(s) for s in steps}) > 1:  # e.g. a file system not yet showing every node the same
            raise InputError(f"{self.run_dir}: the processes see different last checkpoints "
                             f"({sorted(int(s) for s in steps)}); is the run directory shared by every machine?")
        checkpoint.load_weights(self.model, latest)
        state, tensors = checkpoint.load_training_state(latest)
        saved_world = state.pop("world_size", 1)
        layout = state.pop("batching", None)
        self.position = _position(state, latest / "training_state.json")
        if layout != LAYOUT:
            self._start_next_epoch(latest)
        restore_optimizer(self.optimizer, tensors)
        self.checked_step = self.position.step
        if saved_world == self.group.world_size:
            torch.set_rng_state(tensors[f"rng.torch.{self.group.rank}"])
            if self.device.type == "cuda" and f"rng.cuda.{self.group.rank}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{self.group.rank}"], self.device)
        else:  # each process its own dropout draws, as in a new run
            torch.manual_seed(self.config.seed + 1_000_003 * self.group.rank + self.position.step)
            if self.group.is_main:
                say(f"note: {latest} was written by {saved_world} processes, this run has {self.group.world_size}: "
                    "the resumed run draws other dropout masks than an uninterrupted one would")
        if self.group.is_main:
            self.metrics.forget_after(self.position.step)
            say(f"resumed from {latest} (step {self.position.step}, epoch {self.position.epoch}, "
                f"batch {self.position.batch})")

    def _start_next_epoch(self, latest: Path) -> None:
        """A checkpoint of an earlier aiayn batched its epochs otherwise: going on at its batch
        index would replay some pairs and skip others, so the run goes on at the next epoch."""
        p = self.position
        if p.batch:
            if self.group.is_main:
                say(f"note: {latest} was written by an aiayn that batched epochs otherwise: the rest of epoch "
                    f"{p.epoch} is skipped, and training goes on at the start of epoch {p.epoch + 1}")
            p.epoch, p.batch = p.epoch + 1, 0

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def read_step(self, epoch: int, index: int) -> list[Any]:
        """This process's share of the step's batches from (epoch, index) on: read from the
        task's data and collated (in pinned memory for a GPU). Runs ahead, on a reader thread."""
        a, rank = self.config.accumulate, self.group.rank
        batches = self.stream.take(self.group.world_size * a, epoch, index)
        mine = [self.task.read(rows, widths, where) for rows, widths, where in batches[rank * a:(rank + 1) * a]]
        return [b.pin_memory() for b in mine] if self.device.type == "cuda" else mine

    def train_step(self, batches: list[Any]) -> torch.Tensor:
        """One optimizer update over this process's batches of a step (see read_step). Returns,
        summed over the processes: [loss, second figure, items, seconds, non-finite flag],
        on the device (reading it would wait for the device: the caller does that only when it logs).
        The loss and NLL are the task's two sums (aiayn.training.task), and tokens its items."""
        mine = [b.to(self.device, non_blocking=True) for b in batches]
        # Counted on the host (the batch knows its real tokens): nothing to wait for on the device.
        counted = torch.tensor([float(sum(b.n_items for b in batches))], pin_memory=self.device.type == "cuda")
        tokens = self.group.sum(counted.to(self.device, non_blocking=True))[0]
        # DDP averages gradients over processes; scaling by the world size makes that a sum.
        scale = self.group.world_size / tokens.clamp(min=1.0)
        sums = torch.zeros(2, device=self.device)
        for i, batch in enumerate(mine):
            last = i == len(mine) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with self._autocast():
                    loss, second = self.forward(*batch.tensors)
                (loss * scale).backward()
            sums += torch.stack([loss.detach(), second.detach().to(loss.dtype)])
        now = time.perf_counter()  # this step so far, and the previous step's optimizer update
        seconds = torch.tensor([now - self.clock], pin_memory=self.device.type == "cuda")
        self.clock = now
        stats = self.group.sum(torch.cat([sums, tokens[None] / self.group.world_size,  # summed once already
                                          seconds.to(self.device, non_blocking=True),
                                          (~torch.isfinite(sums).all()).float()[None]]))
        # The gradient norm (over gradients DDP has made equal in every process): a non-finite
        # one skips the update even when the loss was finite (a bf16 overflow in the backward).
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if self.config.clip_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), self.config.clip_norm, norm)
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr(self.position.step + 1)
        # A non-finite loss anywhere, or gradient: no process updates.
        self.optimizer.found_inf = ((stats[4] > 0) | ~torch.isfinite(norm)).float()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.diverged = torch.maximum(self.diverged, self.optimizer.found_inf)
        return stats

    def _check_finite(self) -> None:
        """Stop if a step since the last look had a non-finite loss (its update was skipped)."""
        if self.diverged.item():
            first, last = self.checked_step + 1, self.position.step
            steps = f"step {last}" if first == last else f"one of steps {first}-{last}"
            raise TrainingDiverged(f"the loss or its gradient became NaN or infinite at {steps}; no update was "
                                   "applied from there on, and no checkpoint written")
        self.checked_step = self.position.step

    def current_lr(self, step: int) -> float:
        c, d_model = self.config, self.model.config.d_model
        warmup = c.warmup_steps or self.position.warmup_steps or MOST_WARMUP
        if c.decay == "linear":  # BERT's: to 0 at the end of the budget, by the share of it spent
            return linear_decay_rate(step, d_model, warmup, c.lr_scale, self._fraction_done())
        return learning_rate(step, d_model, warmup, c.lr_scale)

    def _fit_warmup(self) -> None:
        """Without --warmup, choose the warm-up from the steps the budget allows (once, and keep it
        in the position, so that a resumed run goes on with it): known from --max-steps or
        --max-epochs, estimated under a time budget after the first FIT_AFTER steps."""
        c, p = self.config, self.position
        if c.warmup_steps is not None or p.warmup_steps:
            return
        known = [n for n in (c.max_steps, c.max_epochs and c.max_epochs * self.stream.per_epoch // self._per_step())
                 if n]
        if c.time_budget_s and p.step >= FIT_AFTER:
            self._settle()
            known.append(int(p.step * c.time_budget_s / max(p.train_seconds, 1e-9)))
        elif c.time_budget_s:
            return
        total = min(known)
        p.warmup_steps = max(1, min(MOST_WARMUP, round(WARMUP_SHARE * total)))
        if self.group.is_main:
            estimated = "estimated from the first steps' speed" if c.time_budget_s and total == known[-1] else "set"
            say(f"warm-up: {p.warmup_steps} steps, {WARMUP_SHARE:.0%} of the {total:,} steps the budget allows "
                f"({estimated}; --warmup sets it)")

    def _per_step(self) -> int:
        return self.group.world_size * self.config.accumulate

    # ------------------------------------------------------------------ the loop
    def _done(self) -> bool:
        c, p = self.config, self.position
        return bool((c.max_steps and p.step >= c.max_steps) or (c.max_epochs and p.epoch >= c.max_epochs)
                    or (c.time_budget_s and p.train_seconds >= c.time_budget_s))

    def _epoch_progress(self) -> float:
        """Epochs done, with the fraction of the current one (for logs and the progress bar)."""
        p = self.position
        return p.epoch + p.batch / self.stream.per_epoch

    def _fraction_done(self) -> float:
        c, p = self.config, self.position
        fractions = [p.step / c.max_steps if c.max_steps else 0.0,
                     self._epoch_progress() / c.max_epochs if c.max_epochs else 0.0,
                     p.train_seconds / c.time_budget_s if c.time_budget_s else 0.0]
        return min(1.0, max(fractions))

    def _settle(self) -> None:
        """Bring the position's token and time counts up to date (reads the device: a sync point)."""
        tokens, seconds = self.unsettled.tolist()
        self.position.tokens += int(tokens)
        self.position.train_seconds += seconds / self.group.world_size  # the processes' mean
        self.unsettled.zero_()
        self._check_finite()

    def _steps(self) -> Iterator[torch.Tensor]:
        """Train step after step until a stopping rule holds, keeping the position. On the CPU the
        counts are settled every step (no device to wait for; a NaN stops training at once); on a
        GPU only when the loop logs or saves, so the time budget is checked at those steps."""
        p, per_step = self.position, self._per_step()
        self.unsettled = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.clock = time.perf_counter()
        # The next step's batches are read while this one trains (pread lets go of the GIL).
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiayn-data")
        try:
            upcoming = reader.submit(self.read_step, p.epoch, p.batch)
            while not self._done():
                batches = upcoming.result()
                for _ in range(per_step):
                    p.epoch, p.batch = self.stream.following(p.epoch, p.batch)
                upcoming = reader.submit(self.read_step, p.epoch, p.batch)
                if p.step in (0, FIT_AFTER):
                    self._fit_warmup()
                stats = self.train_step(batches)
                p.step += 1
                self.unsettled += stats[2:4]
                if self.device.type == "cpu" or self._logs_or_saves():
                    self._settle()
                outside = time.perf_counter()
                yield stats
                self.clock += time.perf_counter() - outside  # validation and saving are not training time
        finally:
            reader.shutdown(wait=True, cancel_futures=True)

    def _logs_or_saves(self) -> bool:
        c, step = self.config, self.position.step
        return step % c.log_every == 0 or step % c.save_every == 0 or (self.valid and step % c.eval_every == 0)

    def run(self) -> Position:
        c, p = self.config, self.position
        self.model.train()
        bar = tqdm(total=1000, file=sys.stderr, dynamic_ncols=True, leave=True, disable=not self.group.is_main,
                   mininterval=0.5 if sys.stderr.isatty() else 30, initial=int(1000 * self._fraction_done()),
                   bar_format="{percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}")
        window = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss, second, items, seconds, (flag)
        steps, started = 0, time.perf_counter()
        for stats in self._steps():
            window += stats
            steps += 1
            if steps == 1:
                self._first_step_done(started)
            done = self._done()
            if p.step % c.log_every == 0 or done:
                self._log(window, bar)
            bar.update(int(1000 * self._fraction_done()) - bar.n)
            scheduled = bool(self.valid) and (p.step % c.eval_every == 0 or done)
            if scheduled and self.group.is_main:
                self._validate_within_share(done)
            if p.step % c.save_every == 0 or done:
                self.save()
            if scheduled:
                # The others wait for process 0 here, in time not counted as training (they would
                # otherwise wait in their next step's collectives, and count it).
                self.group.barrier()
        bar.close()
        if c.compile and self.group.is_main:
            say(f"torch.compile made {self.graphs} graph(s) for {len(self.stream.batches.shapes())} batch shapes")
        if self.valid and self.group.is_main and p.train_seconds > 0:
            say(f"validation took {p.valid_seconds:.1f} s, {100 * p.valid_seconds / p.train_seconds:.1f}% of the "
                f"{p.train_seconds:.0f} s of training steps")
        return p

    def _log(self, window: torch.Tensor, bar: tqdm) -> None:
        """A log record of the steps since the last (read from the device), and the progress line."""
        p, task = self.position, self.task
        loss, second, items, seconds, _ = window.tolist()
        seconds, items = seconds / self.group.world_size, max(items, 1.0)  # a window of no item logs zeros
        record = dict(step=p.step, epoch=round(self._epoch_progress(), 3), train_loss=loss / items)
        if task.second == "nll":
            record.update(train_nll=second / items, train_ppl=math.exp(min(second / items, 50.0)))
            shown = f"ppl {record['train_ppl']:.1f}"
        else:
            record.update(train_accuracy=second / items)
            shown = f"accuracy {record['train_accuracy']:.3f}"
        record.update({"lr": self.current_lr(p.step), f"{task.unit}_per_s": items / seconds,
                       "train_seconds": p.train_seconds})
        if self.first_step_seconds is not None:
            record["first_step_seconds"], self.first_step_seconds = self.first_step_seconds, None
        if self.config.compile:
            record["compiled_graphs"] = self.graphs
        if self.group.is_main:
            self.metrics.record(**record)
        bar.set_postfix_str(f"step {p.step} loss {record['train_loss']:.3f} {shown} "
                            f"{items / seconds:,.0f} {task.unit}/s lr {record['lr']:.2e}", refresh=False)
        window.zero_()

    @property
    def graphs(self) -> int:
        """Graphs torch.compile made for this run's steps (0 without --compile)."""
        return compiled_graphs() - self.graphs_before if self.config.compile else 0

    def _first_step_done(self, started: float) -> None:
        """How long this process's first step took, compiling included (waits for the device once):
        logged with the first record."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.first_step_seconds = round(time.perf_counter() - started, 3)
        if self.config.compile and self.group.is_main:
            say(f"first step done {self.first_step_seconds:.1f} s after the start (compiling included)")

    def _validate_within_share(self, last: bool) -> None:
        """Validate, unless validating has taken more than `valid_share` of the training time so
        far (the last step always validates: its weights are the run's result)."""
        c, p = self.config, self.position
        if not last and p.valid_seconds > c.valid_share * p.train_seconds:
            if not self.skipped_validation:
                say(f"step {p.step}: validation skipped, and later ones while validating has taken more than "
                    f"{c.valid_share:.0%} of the training time ({p.valid_seconds:.1f} s of {p.train_seconds:.1f} s; "
                    "--valid-share, --bleu-sentences and --eval-every set it)")
            self.skipped_validation = True
            return
        started = time.perf_counter()
        self._validate_and_keep_best()
        p.valid_seconds += time.perf_counter() - started

    def _validate_and_keep_best(self) -> None:
        """Validate the weights, or with `average_last` N the mean of the last N validated states
        (§6.1); the best so far is kept as checkpoints/best."""
        p = self.position
        if self.config.average_last > 1:
            self.recent.append({k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()})
        averaged = len(self.recent) > 1
        current = self.model.state_dict() if not averaged else self.recent[-1]
        try:
            if averaged:
                self.model.load_state_dict(checkpoint.mean_state(self.recent))
            self.model.eval()
            metrics, score = self.task.validate(self._autocast)
            note = {"averaged": len(self.recent)} if averaged else {}
            self.metrics.record(step=p.step, train_seconds=p.train_seconds, **metrics, **note)
            say(f"step {p.step}: {self.task.describe(metrics)}"
                + (f" (the mean of the last {len(self.recent)} states)" if averaged else ""))
            if p.best_score is None or score > p.best_score:
                p.best_score = score
                checkpoint.save_checkpoint(self.run_dir / "checkpoints" / checkpoint.BEST_DIR, self.model,
                                           self.task.tokenizer, extra_config={**self._extra_config(), "step": p.step,
                                                                              **metrics, **note})
        finally:
            if averaged:
                self.model.load_state_dict(current)
            self.model.train()


def train(run_dir: str | Path, model_config: ModelConfig | None = None, config: TrainConfig | None = None,
          resume: bool = False, overwrite: bool = False, data: str | None = None,
          workers: int | None = None) -> Trainer:
    """Start a run (model_config and config given) or continue one (resume=True; `data` points it
    at its prepared data if that moved); returns the Trainer. Under torchrun, every process calls
    this alike; process 0 creates the run and the others wait for it.

    A new run goes into a new or empty folder, or replaces an earlier run there with `overwrite`."""
    run_dir = Path(run_dir)
    if resume:
        stopping = config
        tokenizer, model_config, config = load_run(run_dir, data)
        check_device(config.device)
        if stopping is not None:
            config = with_stopping(config, stopping)
        group = Group.join(torch.device(config.device).type)
    else:
        if model_config is None or config is None:
            raise ValueError("a new run needs a model config and a training config")
        group = Group.join(torch.device(config.device).type)
        create_together(group, run_dir, config.device,
                        lambda: create_run(run_dir, model_config, config, overwrite, workers))
        tokenizer, model_config, config = load_run(run_dir)
    prepared = data_dir(run_dir, config)
    return run_task(run_dir, config, group, resume, lambda: TranslationTask(
        Transformer(model_config), tokenizer, PreparedData(prepared), config))


def with_stopping(config: TrainConfig, stopping: TrainConfig) -> TrainConfig:
    """A resumed run's config with new stopping rules (only they may change on resume)."""
    return dataclasses.replace(config, max_steps=stopping.max_steps, max_epochs=stopping.max_epochs,
                               time_budget_s=stopping.time_budget_s)


def run_task(run_dir: Path, config: TrainConfig, group: Group, resume: bool, make_task: Callable[[], Task]) -> Trainer:
    """Train the task `make_task` builds (its model's initial weights drawn after the seed is set)
    in the run directory, from its last checkpoint with `resume`; every process calls this alike."""
    try:
        torch.manual_seed(config.seed)  # the same initial weights in every process
        trainer = Trainer(run_dir, make_task(), config, group)
        if resume:
            trainer.resume()
        elif group.rank:
            torch.manual_seed(config.seed + 1_000_003 * group.rank)  # other dropout draws in each process
        trainer.run()
        group.barrier()  # every process done before the group goes: gloo aborted one leaving early
        return trainer
    finally:
        group.leave()


def create_together(group: Group, run_dir: Path, device: str, create: Callable[[], Any]) -> None:
    """Process 0 creates the run (`create`); the others wait, and learn whether it worked."""
    error = None
    if group.is_main:
        try:
            create()
        except Exception as caught:  # noqa: BLE001 - re-raised below, after the others are told
            error = caught
    failed = group.sum(torch.tensor(float(error is not None), device=group.device(device)))
    if error is not None:
        group.leave()
        raise error
    if failed.item():
        group.leave()
        raise InputError(f"process 0 could not create {run_dir} (its error is above)")
