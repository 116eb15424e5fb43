"""The kinds of the Transformer's descendants, by the name their runs and checkpoints record: the
task that trains each (aiayn.training.task), looked up when a run is resumed."""
from __future__ import annotations

from pathlib import Path

from aiayn.errors import InputError
from aiayn.training.config import TrainConfig
from aiayn.training.task import Task
from aiayn.training.trainer import Trainer


def task_class(kind: str) -> type[Task]:
    """The Task that trains `kind` (imported on demand: each pulls in its own model code)."""
    from aiayn.family.classifier import CLASSIFIER, MASKED_LM, ClassifierTask, MaskedLanguageModelTask
    from aiayn.family.lm import LM, LanguageModelTask
    from aiayn.family.vit import VIT, DigitsTask

    tasks = {LM: LanguageModelTask, MASKED_LM: MaskedLanguageModelTask, CLASSIFIER: ClassifierTask, VIT: DigitsTask}
    if kind not in tasks:
        raise InputError(f"a run of kind {kind!r}: aiayn trains {', '.join(sorted(tasks))} and translators")
    return tasks[kind]


def resume_family(run: Path, stopping: TrainConfig | None) -> Trainer:
    """Go on with a descendant's run exactly where it stopped (`stopping`: new stopping rules)."""
    from aiayn.family.runs import load_family_run, train_family

    stored = load_family_run(run)
    return train_family(run, stored.config, task_class(stored.options["kind"]), stopping=stopping)
