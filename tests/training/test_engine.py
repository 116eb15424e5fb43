"""The training engine on a toy task: a non-finite loss or gradient stops the run, averaging (§6.1)
validates the mean of the last states without disturbing training, both decays, bad settings."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from aiayn.errors import InputError, TrainingDiverged
from aiayn.model import ModelConfig
from aiayn.training.config import TrainConfig
from aiayn.training.distributed import Group
from aiayn.training.schedule import learning_rate, linear_decay_rate
from aiayn.training.task import Task, TensorBatch
from aiayn.training.trainer import Trainer


class SquaredError(nn.Module):
    def __init__(self, model: nn.Module, poison: str | None, seen: list[Tensor]):
        super().__init__()
        self.model, self.poison, self.seen, self.calls = model, poison, seen, 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        time.sleep(0.05)  # steps that take longer than validating: no validation is skipped (--valid-share)
        self.seen.append(self.model.weight.detach().clone())
        output = self.model(x)
        if self.calls == 4 and self.poison == "gradient":  # a finite loss whose gradient is infinite
            output.register_hook(lambda gradient: gradient * float("inf"))
        loss = ((output - 1.0) ** 2).sum() * (float("nan") if self.calls == 4 and self.poison == "loss" else 1.0)
        return loss, loss.detach()


class Toy(Task):
    """One weight vector fitted to rows x = (k, k, k), k = 1..3; `validate` prefers small weights."""

    kind = "toy"

    def __init__(self, poison: str | None = None, validates: bool = True):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        model.config = ModelConfig.preset("tiny", d_model=16)
        super().__init__(model, None)
        self.poison, self.has_validation, self.seen, self.scored = poison, validates, [], []

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(3, dtype=np.int64), np.zeros(3, dtype=np.int64)

    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> TensorBatch:
        return TensorBatch((torch.full((1, 3), float(rows[0] + 1)),), 1)

    def objective(self) -> nn.Module:
        return SquaredError(self.model, self.poison, self.seen)

    @property
    def validates(self) -> bool:
        return self.has_validation

    def validate(self, autocast) -> tuple[dict[str, Any], float]:
        self.scored.append(self.model.weight.detach().clone())
        score = -float(self.model.weight.sum())
        return {"valid_score": score}, score


def train(tmp_path: Path, task: Task, **settings) -> Trainer:
    config = TrainConfig(**{"batch_tokens": 1, "warmup_steps": 2, "log_every": 1, "save_every": 1000,
                            "eval_every": 1000, "valid_share": 1.0, **settings})
    tmp_path.mkdir(exist_ok=True)
    trainer = Trainer(tmp_path, task, config, Group())
    trainer.run()
    return trainer


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_stops_the_run_before_its_update(poison: str, tmp_path: Path) -> None:
    task = Toy(poison)
    with pytest.raises(TrainingDiverged, match="at step 4"):
        train(tmp_path, task, max_steps=10)
    assert torch.isfinite(task.model.weight).all() and torch.equal(task.model.weight.detach(), task.seen[-1])


def test_averaging_validates_the_mean_of_the_last_states_and_trains_on_unchanged(tmp_path: Path) -> None:
    plain = Toy()
    train(tmp_path / "plain", plain, max_steps=12, eval_every=2)
    averaged = Toy()
    trainer = train(tmp_path / "averaged", averaged, max_steps=12, eval_every=2, average_last=3)
    # Validating an average does not disturb training: every step sees the weights it would have seen.
    assert all(torch.equal(a, b) for a, b in zip(plain.seen, averaged.seen)) and len(averaged.seen) == 12
    for k in range(len(plain.scored)):  # plain.scored: the weights at steps 2, 4, ..., 12
        window = plain.scored[max(0, k - 2):k + 1]
        assert torch.allclose(averaged.scored[k], torch.stack(window).mean(dim=0), atol=1e-6)
    records = [json.loads(line) for line in (tmp_path / "averaged" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("averaged", 1) for r in records if "valid_score" in r] == [1, 2, 3, 3, 3, 3]
    best = max(range(len(averaged.scored)), key=lambda k: -float(averaged.scored[k].sum()))
    from aiayn.checkpoint import BEST_DIR
    from safetensors.torch import load_file

    kept = load_file(str(tmp_path / "averaged" / "checkpoints" / BEST_DIR / "model.safetensors"))
    assert torch.allclose(kept["weight"], averaged.scored[best], atol=1e-6)  # the best validated weights
    assert trainer.position.best_score == pytest.approx(-float(averaged.scored[best].sum()))


def test_averaging_without_validation_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--average-last 3: nothing is validated"):
        train(tmp_path, Toy(validates=False), max_steps=2, average_last=3)


def _record_rates(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every Adam step taken from now on, in order."""
    rates = []
    original_step = torch.optim.Adam.step

    def step_and_record(optimizer, *args, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return original_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_and_record)
    return rates


@pytest.mark.parametrize("decay", ["inverse-sqrt", "linear"])
def test_each_step_runs_at_the_rate_of_its_decay(decay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rates = _record_rates(monkeypatch)
    train(tmp_path, Toy(validates=False), max_steps=8, decay=decay)
    if decay == "linear":  # step s has spent (s - 1) / 8 of the budget: the last runs at 1/8 of the rate
        expected = [linear_decay_rate(s, 16, 2, 1.0, (s - 1) / 8) for s in range(1, 9)]
    else:
        expected = [learning_rate(s, 16, 2) for s in range(1, 9)]
    assert rates == pytest.approx(expected)


@pytest.mark.parametrize("field, named", [(dict(decay="cosine"), "decay 'cosine'"),
                                          (dict(average_last=101), "at most 100"),
                                          (dict(average_last=0), "average_last must be at least 1")])
def test_bad_settings_are_named(field: dict, named: str) -> None:
    with pytest.raises(InputError, match=named):
        TrainConfig(max_steps=1, **field)


def test_without_a_warmup_the_budget_sets_it_and_a_resumed_run_keeps_it(tmp_path: Path, monkeypatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    from aiayn.training import trainer as engine

    monkeypatch.setattr(engine, "FIT_AFTER", 3)
    rates = _record_rates(monkeypatch)
    trainer = train(tmp_path / "steps", Toy(validates=False), max_steps=50, warmup_steps=None)
    assert trainer.position.warmup_steps == 3  # 6% of 50
    assert rates == pytest.approx([learning_rate(s, 16, 3) for s in range(1, 51)])
    assert "warm-up: 3 steps, 6% of the 50 steps the budget allows" in capsys.readouterr().err
    # Under a time budget alone: the paper's warm-up begins, and after FIT_AFTER steps their speed sets it.
    timed = train(tmp_path / "time", Toy(validates=False), time_budget_s=2.0, warmup_steps=None, save_every=5)
    steps = timed.position.step
    assert 1 <= timed.position.warmup_steps <= 4000 and "estimated from the first steps' speed" in capsys.readouterr().err
    assert rates[50:53] == pytest.approx([learning_rate(s, 16, 4000) for s in (1, 2, 3)])
    assert rates[53] == pytest.approx(learning_rate(4, 16, timed.position.warmup_steps)) and steps > 4
    # --warmup given: no fitting.
    assert train(tmp_path / "given", Toy(validates=False), max_steps=5, warmup_steps=7).position.warmup_steps == 0
