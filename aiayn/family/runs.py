"""Run directories of the Transformer's descendants, trained by the translator's engine
(aiayn.training.trainer): the same layout as a translator's run (aiayn.training.run), with the
task's own options in config.json and its data, already tokenised, in RUN/data/rows.npz.

    RUN/config.json        {"model": ..., "training": ..., "task": {"kind": ..., the kind's options}}
    RUN/tokenizer.model    the vocabulary (none for a ViT)
    RUN/data/rows.npz      the training (and validation) rows, as flat arrays
    RUN/metrics.jsonl, RUN/checkpoints/...   as a translator's

A run holds its own data, so that `--resume RUN` goes on exactly whatever became of the input files.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aiayn import checkpoint
from aiayn.data.tokenizer import Tokenizer
from aiayn.errors import InputError
from aiayn.files import building, check_output_dir, write_atomic
from aiayn.model import ModelConfig
from aiayn.training.config import TrainConfig
from aiayn.training.distributed import Group
from aiayn.training.loss import projected_label_smoothed_loss
from aiayn.training.run import Metrics, is_run
from aiayn.training.task import Autocast, Task, TensorBatch
from aiayn.runtime import check_device
from aiayn.training.trainer import Trainer, create_together, run_task, with_stopping

ROWS = Path("data") / "rows.npz"


class Rows:
    """Rows of token ids of different lengths, as one flat array and offsets."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @classmethod
    def of(cls, rows: list[list[int]]) -> "Rows":
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        flat = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[int]:
        return self.flat[self.offsets[i]:self.offsets[i + 1]].tolist()

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        return {f"{name}.flat": self.flat, f"{name}.offsets": self.offsets}


def check_rows_fit(rows: Rows, batch_tokens: int) -> None:
    """Every row must fit in a batch (InputError naming --batch-tokens else)."""
    longest = int(rows.lengths().max()) if len(rows) else 0
    if batch_tokens < longest:
        raise InputError(f"--batch-tokens {batch_tokens}: smaller than the longest row ({longest} subwords with "
                         "[CLS] or <s>); give at least that many")


def rows_of(arrays: dict[str, np.ndarray], name: str) -> Rows | None:
    return Rows(arrays[f"{name}.flat"], arrays[f"{name}.offsets"]) if f"{name}.flat" in arrays else None


@dataclasses.dataclass
class FamilyRun:
    """What a run of a descendant holds, as its task is built from it."""

    directory: Path
    model_config: ModelConfig
    config: TrainConfig
    options: dict[str, Any]  # the task's: {"kind": ..., ...}
    tokenizer: Tokenizer | None
    arrays: dict[str, np.ndarray]
    resuming: bool = False  # going on from a checkpoint (a new run's initial weights do not matter)


def create_family_run(run: FamilyRun, overwrite: bool) -> None:
    """Write the run whole (a hidden folder renamed into place when complete); an earlier run at
    the same place is replaced only with `overwrite`, anything else never (checked again here:
    the builder checked it before its work)."""
    check_output_dir(run.directory, "run", is_run, overwrite)
    with building(run.directory, owned=is_run if overwrite else None) as staged:
        if run.tokenizer is not None:
            run.tokenizer.save(staged / "tokenizer.model")
        (staged / ROWS).parent.mkdir()
        with open(staged / ROWS, "wb") as f:
            np.savez(f, **run.arrays)
        write_atomic(staged / "config.json", json.dumps({"model": run.model_config.to_dict(),
                                                          "training": dataclasses.asdict(run.config),
                                                          "task": run.options}, indent=1))
        Metrics(staged).record(event="data", **{k: len(v) - 1 for k, v in run.arrays.items() if k.endswith("offsets")})


def load_family_run(directory: Path) -> FamilyRun:
    """A descendant's run, checked."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such run directory")
    stored = checkpoint.read_config(directory)
    options = stored.get("task")
    if not isinstance(options, dict) or not isinstance(options.get("kind"), str):
        raise InputError(f"{directory / 'config.json'}: not the run of a descendant (no task section)")
    model_config = checkpoint.model_config_of(stored, directory / "config.json")
    try:
        config = TrainConfig(**stored["training"])
    except (KeyError, TypeError) as error:
        raise InputError(f"{directory / 'config.json'}: bad training config ({error})") from None
    tokenizer = None
    if (directory / "tokenizer.model").is_file():
        tokenizer = checkpoint.load_tokenizer(directory / "tokenizer.model")
    try:
        with np.load(directory / ROWS) as stored_arrays:
            arrays = dict(stored_arrays)
    except (OSError, ValueError) as error:
        raise InputError(f"{directory / ROWS}: missing or corrupt ({error})") from None
    return FamilyRun(directory, model_config, config, options, tokenizer, arrays)


def train_family(run: Path, config: TrainConfig, make_task: Callable[[FamilyRun], Task],
                 build: Callable[[], FamilyRun] | None = None, overwrite: bool = False,
                 stopping: TrainConfig | None = None) -> Trainer:
    """Start the run `build` makes at `run` (process 0 builds it: checks, vocabulary, rows; the
    others wait), or without `build` go on with the run there, `stopping` changing its stopping
    rules; every process under torchrun calls this alike."""
    check_device(config.device)
    group = Group.join(torch.device(config.device).type)
    if build is not None:
        create_together(group, run, config.device, lambda: create_family_run(build(), overwrite))
    loaded = load_family_run(run)
    # From a checkpoint, a run's weights are its own; before the first, they start as a new run's.
    loaded.resuming = build is None and bool(checkpoint.step_checkpoints(run))
    if stopping is not None:
        loaded.config = with_stopping(loaded.config, stopping)
    return run_task(run, loaded.config, group, build is None, lambda: _task(make_task, loaded))


def _task(make_task: Callable[[FamilyRun], Task], run: FamilyRun) -> Task:
    """The run's task; InputError naming the run when its options or data are not the kind's."""
    try:
        task = make_task(run)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{run.directory}: config.json's task or {ROWS} is not a {run.options['kind']} run's "
                         f"({type(error).__name__}: {error})") from None
    if task.tokenizer is not None and task.tokenizer.vocab_size != run.model_config.vocab_size:
        raise InputError(f"{run.directory / 'tokenizer.model'}: {task.tokenizer.vocab_size} pieces, but the run's "
                         f"model has vocab_size {run.model_config.vocab_size}")
    return task


class RowsTask(Task):
    """A task whose training rows are one sequence each, `self.rows` (batched by their lengths),
    validated on `self.valid` rows where there are some."""

    rows: Rows
    valid: Rows | None = None

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return self.rows.lengths(), np.zeros(len(self.rows), dtype=np.int64)

    @property
    def validates(self) -> bool:
        return self.valid is not None


def projected_nll(hidden: Tensor, positions: Tensor, projection: nn.Linear, target: Tensor) -> tuple[Tensor, Tensor]:
    """The summed NLL of `projection` at the `positions` (flat indices into hidden's [B, T]) against
    `target`, without logits of the other positions: twice, the loss and the figure logged."""
    nll, _ = projected_label_smoothed_loss(hidden.flatten(0, 1).index_select(0, positions), projection, target, 0.0)
    return nll, nll.detach()


class ClassificationLoss(nn.Module):
    """A classifier with its loss, as one module: the summed cross-entropy of a batch's rows
    (label -100: a padding row, not counted) and how many it labels right."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(inputs).float()
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORED, reduction="sum")
        return loss, (logits.argmax(dim=-1) == labels).sum()


IGNORED = -100  # the label of a padding row


def accuracy_of(objective: ClassificationLoss, batches: Iterable[TensorBatch], autocast: Autocast) -> float:
    """The share of the batches' rows labelled right."""
    device = next(objective.parameters()).device
    correct, count = torch.zeros((), dtype=torch.int64, device=device), 0
    with torch.no_grad():
        for batch in batches:
            with autocast():
                correct += objective(*batch.to(device).tensors)[1]
            count += batch.n_items
    return correct.item() / count


def batch_seed(seed: int, where: tuple[int, int]) -> int:
    """A seed for the randomness of the batch at `where` (epoch, index): the same whether the run
    went straight there or resumed."""
    return int(np.random.SeedSequence([seed, *where]).generate_state(1)[0])
