"""What the training engine (aiayn.training.trainer) asks of a kind of model: its model, the lengths
of its training rows (the engine batches them, §5.1), a batch of given rows read and collated, the
module that turns a batch into a summed loss, and a validation. Translation (§5) is one task; the
descendants of aiayn.model.family (language model, masked language model, classifier, ViT) are
the others, so that every kind trains with the same loop: exact resume, DDP, accumulation,
clipping, compile, bf16, checkpoints, averaging, budgets.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aiayn.data.tokenizer import Tokenizer


@dataclass
class TensorBatch:
    """A collated batch: the objective's arguments, and how many items (tokens, sentences, images)
    its loss sums over, counted on the host so that nothing waits for the device."""

    tensors: tuple[Tensor, ...]
    n_items: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TensorBatch":
        return TensorBatch(tuple(t.to(device, non_blocking=non_blocking) for t in self.tensors), self.n_items)

    def pin_memory(self) -> "TensorBatch":
        return TensorBatch(tuple(t.pin_memory() for t in self.tensors), self.n_items)


Autocast = Callable[[], AbstractContextManager]


class Task(ABC):
    """A kind of model and its data, as the engine trains it.

    The objective's forward(*batch.tensors) returns two sums over the batch's items: the loss
    that is minimised, and a second figure that is logged (`second`: "nll" for the models of text,
    whose perplexity it gives, "correct" for classifiers, whose accuracy it gives)."""

    kind: str  # config.json's "kind" in the task's checkpoints
    second: str = "nll"
    unit: str = "tokens"  # what n_items counts, for the progress line

    def __init__(self, model: nn.Module, tokenizer: Tokenizer | None):
        self.model, self.tokenizer = model, tokenizer

    @abstractmethod
    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Per training row, its two lengths as batched (source and target; the second all 0 for
        kinds of one sequence a row)."""

    @abstractmethod
    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> Any:
        """The batch of training `rows` padded to `widths`; `where` (epoch, index) is the batch's
        place in the run, from which any randomness of the batch (masking) is drawn."""

    @abstractmethod
    def objective(self) -> nn.Module:
        """The model with its loss, as one module (DDP wraps it, torch.compile compiles it)."""

    def validate(self, autocast: Autocast) -> tuple[dict[str, Any], float] | None:
        """Validation figures of the model as it is, and the score that picks the best checkpoint
        (higher is better); None when the task has nothing to validate on."""
        return None

    @property
    def validates(self) -> bool:
        return False

    def checkpoint_config(self) -> dict[str, Any]:
        """What the task's checkpoints record beside the model config (kind, labels, ...)."""
        return {"kind": self.kind}

    def describe(self, metrics: dict[str, Any]) -> str:
        """A validation's figures, for the log."""
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
