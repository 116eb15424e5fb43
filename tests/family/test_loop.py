"""The descendants' training loop: a loss or gradient that stops being finite ends the run."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from aiayn.errors import TrainingDiverged
from aiayn.family.loop import Schedule, fit, forever


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
