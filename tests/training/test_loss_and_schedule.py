"""§5.4 label smoothing and §5.3 learning-rate schedule."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aiayn.training.loss import label_smoothed_loss
from aiayn.training.schedule import learning_rate, linear_decay_rate, peak_learning_rate

PAD = 0


def test_loss_and_gradient_match_pytorch_label_smoothing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 17, requires_grad=True)
    target = torch.randint(1, 17, (3, 6))
    target[1, 4:] = PAD
    ours = label_smoothed_loss(logits, target, PAD, 0.1)
    reference = F.cross_entropy(logits.reshape(-1, 17), target.reshape(-1), ignore_index=PAD, label_smoothing=0.1,
                                reduction="sum")
    assert ours.smoothed.item() == pytest.approx(reference.item(), rel=1e-5)
    assert ours.tokens == 16
    nll = F.cross_entropy(logits.reshape(-1, 17), target.reshape(-1), ignore_index=PAD, reduction="sum")
    assert ours.nll.item() == pytest.approx(nll.item(), rel=1e-5)
    (grad_ours,) = torch.autograd.grad(ours.smoothed, logits)
    (grad_reference,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-6)
    assert grad_ours[1, 4:].abs().max() == 0  # padding gets no gradient


def test_backward_leaves_the_logits_alone_and_the_nll_has_its_gradient() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 13, requires_grad=True)
    target = torch.randint(1, 13, (2, 4))
    target[0, 3] = PAD
    kept = logits.detach().clone()
    sums = label_smoothed_loss(logits, target, PAD, 0.1)
    (grad,) = torch.autograd.grad(sums.nll + 0.5 * sums.smoothed, logits)
    assert torch.equal(logits.detach(), kept)  # the backward once wrote into float32 logits in place
    flat_logits, flat_target = logits.reshape(-1, 13), target.reshape(-1)
    reference = (F.cross_entropy(flat_logits, flat_target, ignore_index=PAD, reduction="sum")
                 + 0.5 * F.cross_entropy(flat_logits, flat_target, ignore_index=PAD, label_smoothing=0.1, reduction="sum"))
    (expected,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_bf16_logits_give_a_float32_loss_close_to_float32() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 5, 50) * 5
    target = torch.randint(1, 50, (4, 5))
    full = label_smoothed_loss(logits, target, PAD)
    half = label_smoothed_loss(logits.bfloat16().requires_grad_(), target, PAD)
    assert half.smoothed.dtype == torch.float32
    assert half.smoothed.item() == pytest.approx(full.smoothed.item(), rel=2e-2)


def test_no_padding_and_all_padding_batches_are_safe() -> None:
    logits = torch.randn(2, 3, 11, requires_grad=True)
    everything = label_smoothed_loss(logits, torch.randint(1, 11, (2, 3)), PAD)
    assert everything.tokens == 6 and math.isfinite(everything.smoothed.item())
    nothing = label_smoothed_loss(logits, torch.zeros(2, 3, dtype=torch.long), PAD)
    assert nothing.tokens == 0 and nothing.smoothed.item() == 0.0
    nothing.smoothed.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_smoothing_keeps_the_minimum_above_zero() -> None:
    # With eps > 0 a one-hot-confident model is not optimal: the loss has a positive floor.
    logits = torch.full((1, 1, 10), -20.0)
    logits[..., 3] = 20.0
    assert label_smoothed_loss(logits, torch.tensor([[3]]), PAD, 0.1).smoothed.item() > 3.0
    assert label_smoothed_loss(logits, torch.tensor([[3]]), PAD, 0.0).smoothed.item() < 1e-6


def test_schedule_is_the_formula_of_section_5_3() -> None:
    d, warmup = 512, 4000
    for step in (1, 100, 3999, 4000, 4001, 10_000, 100_000):
        expected = d ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        assert learning_rate(step, d, warmup) == pytest.approx(expected)
    rates = [learning_rate(s, d, warmup) for s in range(1, 20_000, 50)]
    peak = max(rates)
    assert peak == pytest.approx(peak_learning_rate(d, warmup), rel=1e-3)
    assert learning_rate(2000, d, warmup) == pytest.approx(learning_rate(4000, d, warmup) / 2)  # linear warm-up
    assert learning_rate(16000, d, warmup) == pytest.approx(learning_rate(4000, d, warmup) / 2)  # 1/sqrt decay
    assert learning_rate(4000, d, warmup, scale=2.0) == pytest.approx(2 * learning_rate(4000, d, warmup))


def test_linear_decay_warms_up_as_section_5_3_then_falls_to_zero_with_the_budget() -> None:
    d, warmup = 256, 100
    peak = peak_learning_rate(d, warmup)
    assert linear_decay_rate(50, d, warmup, 1.0, used=0.0) == pytest.approx(learning_rate(50, d, warmup))
    assert linear_decay_rate(100, d, warmup, 1.0, used=0.0) == pytest.approx(peak)
    assert linear_decay_rate(400, d, warmup, 1.0, used=0.25) == pytest.approx(0.75 * peak)
    assert linear_decay_rate(400, d, warmup, 3.0, used=0.25) == pytest.approx(2.25 * peak)
    assert linear_decay_rate(50, d, warmup, 1.0, used=0.5) == pytest.approx(0.5 * learning_rate(50, d, warmup))
    assert linear_decay_rate(900, d, warmup, 1.0, used=1.0) == 0.0
    assert linear_decay_rate(900, d, warmup, 1.0, used=1.5) == 0.0  # a step past a time budget never goes negative
