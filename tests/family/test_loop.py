"""The descendants' training loop: a loss or gradient that stops being finite ends the run."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from aiayn.errors import InputError, TrainingDiverged
from aiayn.family.loop import Schedule, fit, forever
from aiayn.training.schedule import learning_rate, linear_decay_rate


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_stops_the_run(poison: str) -> None:
    model = nn.Linear(2, 1)
    model.config = SimpleNamespace(d_model=2)
    weight = model.weight.detach().clone()

    def loss_of(net: nn.Module, step: int) -> tuple[torch.Tensor, int]:
        output = net(torch.ones(1, 2))
        if step == 3 and poison == "gradient":  # a finite loss whose gradient is infinite
            output.register_hook(lambda gradient: gradient * float("inf"))
        loss = output.sum() * (float("nan") if step == 3 and poison == "loss" else 1.0)
        assert poison == "loss" or torch.isfinite(loss)
        return loss, 1

    with pytest.raises(TrainingDiverged, match="at step 4"):
        fit(model, forever(lambda e: [0, 1, 2, 3]), loss_of, Schedule(max_steps=10, warmup_steps=1))
    assert not torch.equal(model.weight, weight) and torch.isfinite(model.weight).all()


def test_averaging_scores_and_keeps_the_mean_of_the_last_states_and_trains_on_unchanged() -> None:
    def run(average_last: int) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor], object]:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        model.config = SimpleNamespace(d_model=3)
        seen, evaluated = [], []

        def loss_of(net: nn.Module, step: int) -> tuple[torch.Tensor, int]:
            return ((net(torch.full((1, 3), float(step))) - 1.0) ** 2).sum(), 1

        def evaluate(net: nn.Module) -> float:
            evaluated.append(net.weight.detach().clone())
            return -float(net.weight.sum())  # prefers the smallest weights: an early state, or a mean

        def record(net: nn.Module, step: int) -> tuple[torch.Tensor, int]:
            seen.append(net.weight.detach().clone())
            return loss_of(net, step)

        outcome = fit(model, forever(lambda e: [1, 2, 3]), record, Schedule(max_steps=12, warmup_steps=2, eval_every=2,
                                                                            average_last=average_last), evaluate)
        return model, seen, evaluated, outcome

    plain_model, plain_seen, plain_scored, _ = run(1)
    model, seen, scored, outcome = run(3)
    # Evaluating an average does not disturb training: every step sees the weights it would have seen.
    assert len(seen) == len(plain_seen) == 12
    assert all(torch.equal(a, b) for a, b in zip(plain_seen, seen)) and torch.equal(plain_model.weight, model.weight)
    states = plain_scored  # the weights at steps 2, 4, ..., 12
    for k in range(len(states)):
        window = states[max(0, k - 2):k + 1]
        assert torch.allclose(scored[k], torch.stack(window).mean(dim=0), atol=1e-6)
    best = max(range(len(scored)), key=lambda k: -float(scored[k].sum()))
    assert best > 0  # an average, not a state that was current when scored
    assert torch.allclose(outcome.best_state["weight"], scored[best], atol=1e-6)
    assert [h["averaged"] for h in outcome.history if "score" in h] == [1, 2, 3, 3, 3, 3]


def test_averaging_without_validation_is_refused() -> None:
    model = nn.Linear(2, 1)
    model.config = SimpleNamespace(d_model=2)
    with pytest.raises(InputError, match="--average-last 3: nothing is validated"):
        fit(model, forever(lambda e: [0]), lambda net, step: (net(torch.ones(1, 2)).sum(), 1),
            Schedule(max_steps=2, average_last=3))


def test_at_most_a_hundred_states_are_averaged() -> None:
    with pytest.raises(InputError, match="at most 100"):
        Schedule(max_steps=1, average_last=101)


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
def test_each_step_runs_at_the_rate_of_its_decay(decay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Linear(2, 1)
    model.config = SimpleNamespace(d_model=16)
    optimizer_rates = _record_rates(monkeypatch)

    def loss_of(net: nn.Module, step: int) -> tuple[torch.Tensor, int]:
        return net(torch.ones(1, 2)).sum(), 1

    fit(model, forever(lambda e: [0]), loss_of, Schedule(max_steps=8, warmup_steps=2, decay=decay))
    if decay == "linear":  # step s has spent (s - 1) / 8 of the budget: the last runs at 1/8 of the rate
        expected = [linear_decay_rate(s, 16, 2, 1.0, (s - 1) / 8) for s in range(1, 9)]
    else:
        expected = [learning_rate(s, 16, 2) for s in range(1, 9)]
    assert optimizer_rates == pytest.approx(expected)


def test_an_unknown_decay_is_refused() -> None:
    with pytest.raises(InputError, match="decay 'cosine'"):
        Schedule(max_steps=1, decay="cosine")


def test_a_time_budget_decays_the_rate_with_the_seconds_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Linear(2, 1)
    model.config = SimpleNamespace(d_model=16)
    optimizer_rates = _record_rates(monkeypatch)
    clock = iter(range(1000))  # every reading one second later: each step takes 1 s of the 4 s budget
    monkeypatch.setattr("aiayn.family.loop.time.perf_counter", lambda: float(next(clock)))
    outcome = fit(model, forever(lambda e: [0]), lambda net, _: (net(torch.ones(1, 2)).sum(), 1),
                  Schedule(time_budget_s=4.0, warmup_steps=1, decay="linear"))
    assert outcome.steps == 4
    assert optimizer_rates == pytest.approx([linear_decay_rate(1, 16, 1, 1.0, used) for used in (0, .25, .5, .75)])


@pytest.mark.parametrize("field", [dict(max_steps=0), dict(max_steps=-3), dict(time_budget_s=-1.0),
                                   dict(time_budget_s=float("nan")), dict(max_steps=5, time_budget_s=float("inf"))])
def test_a_stopping_rule_that_never_or_always_holds_is_refused(field: dict) -> None:
    with pytest.raises(InputError):
        Schedule(**field)
