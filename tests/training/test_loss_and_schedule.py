"""§5.4 label smoothing and §5.3 learning-rate schedule."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

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


# ----------------------------------------------------------------------------- the lean loss of training

def padded_batch(vocab: int = 97):
    """A tiny model and a batch whose targets are a third padding."""
    from aiayn.data.batching import collate
    from aiayn.model import ModelConfig, Transformer

    torch.manual_seed(3)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=vocab, d_model=32, d_ff=64, dropout=0.0))
    rows = [torch.randint(4, vocab, (n,)).tolist() for n in (40, 12, 30, 1)]
    return model, collate(rows, [r[::-1] + r[:2] for r in rows])


def parameter_gradients(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    parameters = [p for p in model.parameters() if p.requires_grad]
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, parameters, allow_unused=True), parameters)]


def test_training_loss_drops_padding_and_chunks_yet_gives_the_gradients_of_the_whole_logits(monkeypatch) -> None:
    from aiayn.training import loss as loss_module
    from aiayn.training.loss import TeacherForcingLoss

    model, batch = padded_batch()
    monkeypatch.setitem(loss_module.CHUNK_ELEMENTS, "cpu", 97 * 7)  # chunks of 7 rows: several per batch
    smoothed, nll = TeacherForcingLoss(model, 0.1)(batch.src, batch.tgt_in, batch.tgt_out, batch.positions)
    reference = label_smoothed_loss(model(batch.src, batch.tgt_in), batch.tgt_out, PAD, 0.1)
    assert smoothed.item() == pytest.approx(reference.smoothed.item(), rel=1e-6)
    assert nll.item() == pytest.approx(reference.nll.item(), rel=1e-6) and not nll.requires_grad
    tokens = batch.n_target_tokens  # training's scale: the mean over target tokens
    ours = parameter_gradients(model, smoothed / tokens)
    theirs = parameter_gradients(model, reference.smoothed / tokens)
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < 1e-5
    assert max(b.abs().max().item() for b in theirs) > 1e-2


def dropout_batch(dropout: float):
    """padded_batch's batch, with a model of the given dropout in training mode."""
    from aiayn.model import ModelConfig, Transformer

    _, batch = padded_batch()
    torch.manual_seed(5)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=97, d_model=32, d_ff=64, dropout=dropout))
    return model.train(), batch


@pytest.mark.parametrize("bf16", [False, True])
def test_rdrop_without_dropout_is_the_plain_loss_and_gradient(bf16: bool) -> None:
    """Two passes with no dropout are the same pass: the KL term is 0, the loss and its gradient
    those of one pass (so the halving keeps the figures per token), under bf16 autocast too."""
    from aiayn.training.loss import TeacherForcingLoss

    model, batch = dropout_batch(0.0)
    tolerance = 1e-2 if bf16 else 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        plain, plain_nll = TeacherForcingLoss(model, 0.1)(*batch.tensors)
        rdrop, rdrop_nll = TeacherForcingLoss(model, 0.1, rdrop=5.0)(*batch.tensors)
    assert rdrop.item() == pytest.approx(plain.item(), rel=tolerance)
    assert rdrop_nll.item() == pytest.approx(plain_nll.item(), rel=tolerance) and not rdrop_nll.requires_grad
    ours, theirs = parameter_gradients(model, rdrop), parameter_gradients(model, plain)
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < tolerance


def rdrop_reference(model, batch, weight: float):
    """R-Drop's objective by autograd and torch's KL, halved: the two passes' mean smoothed loss
    plus weight / 2 times their symmetric KL, and their mean NLL (the same dropout masks as
    TeacherForcingLoss draws after the same seed: the doubled batch in one pass)."""
    src, tgt_in, tgt_out, positions = batch.tensors
    hidden = model.teacher_forcing_output(torch.cat([src, src]), torch.cat([tgt_in, tgt_in]))
    target = tgt_out.flatten()[positions]
    lp = [F.log_softmax(model.output_projection(h.flatten(0, 1)[positions]).float(), dim=-1) for h in hidden.chunk(2)]
    smoothed = [F.cross_entropy(x, target, label_smoothing=0.1, reduction="sum") for x in lp]
    kl = [F.kl_div(a, b, log_target=True, reduction="sum") for a, b in ((lp[0], lp[1]), (lp[1], lp[0]))]
    assert kl[0].item() > 0.1 and kl[1].item() > 0.1  # the masks differ
    nll = sum(F.nll_loss(x, target, reduction="sum") for x in lp) / 2
    return (smoothed[0] + smoothed[1]) / 2 + weight / 2 * (kl[0] + kl[1]) / 2, nll


@pytest.mark.parametrize("path", ["fused", "compiled", "bf16"])
def test_rdrop_adds_the_symmetric_kl_of_two_dropout_passes(monkeypatch, path: str) -> None:
    """R-Drop's Eq. 3, halved, and its gradient: the fused loss in chunks of pairs, the plain
    formula torch.compile runs, and the fused loss under bf16 autocast (the reference too)."""
    from aiayn.training import loss as loss_module
    from aiayn.training.loss import TeacherForcingLoss

    monkeypatch.setitem(loss_module.CHUNK_ELEMENTS, "cpu", 97 * 14)  # chunks of 7 pairs: several per batch
    if path == "compiled":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model, batch = dropout_batch(0.3)
    tolerance = 2e-2 if path == "bf16" else 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path == "bf16"):
        torch.manual_seed(11)
        loss, nll = TeacherForcingLoss(model, 0.1, rdrop=4.0)(*batch.tensors)
        torch.manual_seed(11)
        expected, expected_nll = rdrop_reference(model, batch, 4.0)
    assert loss.item() == pytest.approx(expected.item(), rel=tolerance)
    assert nll.item() == pytest.approx(expected_nll.item(), rel=tolerance)
    tokens = batch.n_target_tokens
    ours, theirs = parameter_gradients(model, loss / tokens), parameter_gradients(model, expected / tokens)
    largest = max(b.abs().max().item() for b in theirs)
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < tolerance * largest
    assert largest > 1e-2


def test_rdrop_doubles_the_batch_in_training_only(monkeypatch) -> None:
    """Two passes while training; validation (eval mode) runs the batch once."""
    from aiayn.training.loss import TeacherForcingLoss

    model, batch = dropout_batch(0.3)
    rows, forward = [], model.teacher_forcing_output
    monkeypatch.setattr(model, "teacher_forcing_output", lambda src, tgt_in: rows.append(len(src)) or forward(src, tgt_in))
    objective = TeacherForcingLoss(model, 0.1, rdrop=4.0)
    objective(*batch.tensors)
    model.eval()
    with torch.no_grad():
        objective(*batch.tensors)
    assert rows == [2 * len(batch.src), len(batch.src)]


def test_rdrop_without_gradients_gives_the_same_loss() -> None:
    """Under no_grad the fused loss skips the gradient work, not the KL term."""
    from aiayn.training.loss import TeacherForcingLoss

    model, batch = dropout_batch(0.3)
    objective = TeacherForcingLoss(model, 0.1, rdrop=4.0)
    torch.manual_seed(11)
    with torch.no_grad():
        without = objective(*batch.tensors)[0].item()
    torch.manual_seed(11)
    assert objective(*batch.tensors)[0].item() == pytest.approx(without, rel=1e-6)


def test_rdrop_refuses_an_odd_row_count() -> None:
    from aiayn.training.loss import projected_label_smoothed_loss

    with pytest.raises(ValueError, match="odd"):
        projected_label_smoothed_loss(torch.randn(3, 8), torch.nn.Linear(8, 5), torch.tensor([1, 2, 3]), rdrop=1.0)


class LargeFloat32Storages(TorchDispatchMode):
    """The most float32 storages of at least `numel` elements alive at once, over every operation
    (forward and backward). Storages are watched, not tensors: autograd keeps saved tensors alive
    after their Python objects are gone."""

    def __init__(self, numel: int, vocab: int):
        super().__init__()
        self.numel, self.alive, self.most = numel, {}, 0
        self.vocab, self.logit_rows = vocab, 0  # the most rows of logits made at once, of any dtype

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dim() == 2 and t.size(-1) == self.vocab:
                self.logit_rows = max(self.logit_rows, t.size(0))
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.untyped_storage().nbytes() >= 4 * self.numel:
                self.alive[t.untyped_storage().data_ptr()] = StorageWeakRef(t.untyped_storage())
        self.alive = {k: ref for k, ref in self.alive.items() if not ref.expired()}
        self.most = max(self.most, len(self.alive))
        return out


@pytest.mark.parametrize("bf16", [False, True])
def test_training_loss_never_holds_the_logits_in_float32(bf16: bool) -> None:
    from aiayn.training.loss import TeacherForcingLoss

    model, batch = padded_batch(vocab=4001)
    logits_size = batch.n_target_tokens * 4001  # the real positions' logits, [N, V] (N > 3 x d_model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with LargeFloat32Storages(logits_size, 4001) as whole_logits:
            reference = label_smoothed_loss(model(batch.src, batch.tgt_in), batch.tgt_out, PAD, 0.1)
            reference.smoothed.backward()
        with LargeFloat32Storages(logits_size, 4001) as lean:
            smoothed, _ = TeacherForcingLoss(model, 0.1)(batch.src, batch.tgt_in, batch.tgt_out, batch.positions)
            smoothed.backward()
    assert whole_logits.most >= 2  # what the watch sees in the plain formula: float32 copies of the logits
    assert lean.most <= 1  # one chunk of the logits at most (here the batch fits in one chunk)
    assert whole_logits.logit_rows == batch.tgt_out.numel() and lean.logit_rows == batch.n_target_tokens  # no padding


class MatrixProducts(TorchDispatchMode):
    """Counts matrix products (mm, addmm, bmm, matmul's kernels) over every operation."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_validation_computes_no_gradient_of_the_projection(monkeypatch) -> None:
    """Without grad mode (validation), each chunk costs one product: the logits; with it, three
    (the logits, and the gradients of the hidden states and of the projection)."""
    from aiayn.training import loss as loss_module
    from aiayn.training.loss import projected_label_smoothed_loss

    model, batch = padded_batch()
    monkeypatch.setitem(loss_module.CHUNK_ELEMENTS, "cpu", 97 * 7)  # chunks of 7 rows
    hidden = torch.randn(batch.n_target_tokens, 32)
    target = batch.tgt_out.flatten()[batch.positions]
    chunks = -(-batch.n_target_tokens // 7)
    counts = {}
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode), MatrixProducts() as products:
            smoothed, _ = projected_label_smoothed_loss(hidden, model.output_projection, target, 0.1)
        counts[grad_mode] = products.count
        assert smoothed.requires_grad == grad_mode
    assert counts == {True: 3 * chunks, False: chunks}
