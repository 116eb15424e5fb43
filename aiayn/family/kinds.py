"""Resuming a descendant's run: the task that trains its kind, from the registry (aiayn.kinds)."""
from __future__ import annotations

from pathlib import Path

from aiayn.errors import InputError
from aiayn.kinds import KINDS, TRANSLATOR, kinds_with
from aiayn.training.config import TrainConfig
from aiayn.training.task import Task
from aiayn.training.trainer import Trainer


def task_class(kind: str) -> type[Task]:
    """The Task that trains the descendant `kind` (imported on demand: each pulls in its own model code)."""
    descendants = [name for name in kinds_with("task") if name != TRANSLATOR]
    if kind not in descendants:
        raise InputError(f"a run of kind {kind!r}: its descendants' verbs train {', '.join(descendants)}")
    return KINDS[kind].part("task")


def resume_family(run: Path, stopping: TrainConfig | None) -> Trainer:
    """Go on with a descendant's run exactly where it stopped (`stopping`: new stopping rules)."""
    from aiayn.family.runs import load_family_run, train_family

    stored = load_family_run(run)
    return train_family(run, stored.config, task_class(stored.options["kind"]), stopping=stopping)
