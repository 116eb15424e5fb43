"""§5.4: label smoothing of value eps_ls = 0.1, over the whole vocabulary, padding ignored.

Training asks for the loss of the decoder's output at the real target positions only
(`TeacherForcingLoss`): padding is dropped before the output projection (§3.4), and the projection
and the loss run together in chunks of rows (`projected_label_smoothed_loss`), so that no [N, vocab]
float32 tensor is ever whole in memory. Under torch.compile the plain formula runs instead, which
the compiler fuses into a few passes over the (bfloat16) logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Logits per chunk of the fused projection and loss: 256 MiB of float32 on a GPU (a few large
# matrix products per batch), 16 MiB on a CPU (a chunk stays in cache while it is read ~8 times).
CHUNK_ELEMENTS = {"cuda": 1 << 26, "cpu": 1 << 22}


@dataclass
class LossSums:
    """Sums over the real (non-pad) target tokens of a batch, so batches can be added up."""

    smoothed: Tensor  # the training objective, label-smoothed cross-entropy
    nll: Tensor  # plain negative log-likelihood, for perplexity
    tokens: Tensor  # a count, as a tensor: reading it would wait for the device


def label_smoothed_terms(logits: Tensor, target: Tensor, smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per row of float32 logits [N, V]: the smoothed loss, the NLL and logsumexp.

    loss = (1 - eps) * (lse - logit[target]) + eps * (lse - mean(logits)): cross-entropy against
    (1 - eps) on the true token + eps spread evenly over the vocabulary."""
    lse = torch.logsumexp(logits, dim=-1)
    nll = lse - logits.gather(-1, target[:, None]).squeeze(-1)
    return (1.0 - smoothing) * nll + smoothing * (lse - logits.mean(dim=-1)), nll, lse


def label_smoothed_loss(logits: Tensor, target: Tensor, pad_id: int, smoothing: float = 0.1) -> LossSums:
    """The loss from whole logits [..., V] and targets [...] (padding counts zero): plain autograd,
    in float32 whatever the logits' dtype. The reference the fused path is tested against, and the
    loss for callers that have logits anyway."""
    flat_target = target.reshape(-1)
    weight = (flat_target != pad_id).float()
    smoothed, nll, _ = label_smoothed_terms(logits.reshape(-1, logits.size(-1)).float(), flat_target, smoothing)
    return LossSums(smoothed=(smoothed * weight).sum(), nll=(nll * weight).sum(), tokens=weight.sum())


def _smoothed_logit_gradient_(logits: Tensor, lse: Tensor, target: Tensor, smoothing: float) -> Tensor:
    """d loss / d logits = softmax(logits) - (1 - eps) * onehot(target) - eps / V, written over
    `logits` (a float32 chunk of the caller's own)."""
    grad = logits.sub_(lse[:, None]).exp_().sub_(smoothing / logits.size(-1))
    return grad.scatter_add_(1, target[:, None], torch.full_like(lse[:, None], smoothing - 1.0))


def _rdrop_terms_(logprobs: Tensor, target: Tensor, smoothing: float, weight: float,
                  wants_grad: bool) -> tuple[Tensor | None, Tensor]:
    """Paired rows of float32 log-softmax (the first half against the second; the caller's own):
    the per-pair symmetric KL, (KL(P||Q) + KL(Q||P)) / 2, and, when `wants_grad`, the gradient of
    both rows' smoothed losses plus `weight` times that KL, written over `logprobs`.
    d KL(P||Q) / d z_P = P * (log P - log Q - KL(P||Q)) and d KL(Q||P) / d z_P = P - Q."""
    first, second = logprobs.chunk(2)
    p, q, gap = first.exp(), second.exp(), first - second
    kl_pq, kl_qp = (p * gap).sum(dim=-1), -(q * gap).sum(dim=-1)
    if not wants_grad:
        return None, (kl_pq + kl_qp) / 2
    half_weight = weight / 2
    # In the halves' own memory: p, q and gap (1.5 chunks of float32) beside it, not more temporaries.
    first.copy_(gap).sub_(kl_pq[:, None]).add_(1.0).mul_(half_weight).add_(1.0).mul_(p).sub_(q, alpha=half_weight)
    second.copy_(gap).neg_().sub_(kl_qp[:, None]).add_(1.0).mul_(half_weight).add_(1.0).mul_(q).sub_(p, alpha=half_weight)
    grad = logprobs.sub_(smoothing / logprobs.size(-1))
    grad.scatter_add_(1, target[:, None], torch.full_like(grad[:, :1], smoothing - 1.0))
    return grad, (kl_pq + kl_qp) / 2


class _ProjectedLabelSmoothedLoss(torch.autograd.Function):
    """Summed smoothed loss and NLL of `hidden @ weight.T + bias` against `target`, chunk by chunk.

    A chunk's logits live only while its loss and its gradients are computed: the gradients of
    hidden, weight and bias come out of the forward (as Liger's fused linear cross-entropy does),
    and the backward only scales them by the incoming gradient. Products run in `compute_dtype`
    (autocast's), the softmax and the loss in float32. The NLL is for logging: not differentiable.

    With `rdrop` > 0 the rows are two passes of the same N tokens ([2N, d], the first N against
    the last N): each chunk takes matching rows of both, and the loss adds `rdrop` times the
    pairs' symmetric KL (R-Drop's Eq. 3).
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, smoothing: float,
                compute_dtype: torch.dtype, differentiable: bool, rdrop: float = 0.0) -> tuple[Tensor, Tensor]:
        # needs_input_grad holds under no_grad too: validation would compute gradients it drops.
        wants_grad = differentiable and any(ctx.needs_input_grad[:3])
        h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
        b = None if bias is None else bias.to(compute_dtype)
        totals = torch.zeros(2, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if wants_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if wants_grad else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if wants_grad and bias is not None else None
        rows = max(1, CHUNK_ELEMENTS.get(hidden.device.type, CHUNK_ELEMENTS["cpu"]) // weight.size(0))
        for chunk in _chunks(h.size(0), rows, rdrop > 0, h.device):
            part, part_target = h[chunk], target[chunk]
            logits = F.linear(part, w, b).float()
            smoothed, nll, lse = label_smoothed_terms(logits, part_target, smoothing)
            totals += torch.stack([smoothed.sum(), nll.sum()])
            if rdrop > 0:
                grad, symmetric_kl = _rdrop_terms_(logits.sub_(lse[:, None]), part_target, smoothing, rdrop, wants_grad)
                totals[0] += rdrop * symmetric_kl.sum()
            elif wants_grad:
                grad = _smoothed_logit_gradient_(logits, lse, part_target, smoothing)
            if wants_grad:
                grad = grad.to(compute_dtype)
                grad_hidden[chunk] = (grad @ w).to(grad_hidden.dtype)  # index_put does not cast
                grad_weight += grad.t() @ part
                if grad_bias is not None:
                    grad_bias += grad.sum(dim=0)
        if wants_grad:  # in the parameters' own dtypes, as autograd would give them
            grad_weight = grad_weight.to(weight.dtype)
            grad_bias = None if grad_bias is None else grad_bias.to(bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        smoothed_sum, nll_sum = totals.unbind()
        ctx.mark_non_differentiable(nll_sum)
        return smoothed_sum, nll_sum

    @staticmethod
    def backward(ctx, grad_smoothed: Tensor, grad_nll: Tensor | None) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scaled = [None if g is None else g * grad_smoothed for g in (grad_hidden, grad_weight, grad_bias)]
        return (*scaled, None, None, None, None, None)


def _chunks(n: int, rows: int, paired: bool, device: torch.device) -> list[slice | Tensor]:
    """Chunks of about `rows` of the n rows; paired: the same rows of both halves together."""
    if not paired:
        return [slice(start, start + rows) for start in range(0, n, rows)]
    half, step = n // 2, max(1, rows // 2)
    firsts = [torch.arange(start, min(start + step, half), device=device) for start in range(0, half, step)]
    return [torch.cat([first, first + half]) for first in firsts]


def projected_label_smoothed_loss(hidden: Tensor, projection: nn.Linear, target: Tensor, smoothing: float = 0.1,
                                  rdrop: float = 0.0) -> tuple[Tensor, Tensor]:
    """Summed smoothed loss (differentiable) and NLL of `projection(hidden)` [N, V] against
    `target` [N] (real tokens only: no padding here), without the [N, V] logits in float32.
    With `rdrop` > 0, plus `rdrop` times the symmetric KL of the first N / 2 rows' distributions
    and the last N / 2 rows' (two passes of the same tokens, R-Drop)."""
    if rdrop > 0 and hidden.size(0) % 2:
        raise ValueError(f"R-Drop pairs rows: {hidden.size(0)} rows is an odd count")
    device = hidden.device.type
    if torch.compiler.is_compiling():  # the compiler fuses the plain formula; chunks would guard on N
        logits = projection(hidden).float()
        smoothed, nll, _ = label_smoothed_terms(logits, target, smoothing)
        loss = smoothed.sum()
        if rdrop > 0:
            first, second = logits.log_softmax(dim=-1).chunk(2)
            loss = loss + rdrop * ((first.exp() - second.exp()) * (first - second)).sum() / 2
        return loss, nll.sum().detach()
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else projection.weight.dtype
    with torch.autocast(device, enabled=False):
        return _ProjectedLabelSmoothedLoss.apply(hidden, projection.weight, projection.bias, target, smoothing, dtype,
                                                 torch.is_grad_enabled(), rdrop)


class TeacherForcingLoss(nn.Module):
    """The training objective of a Transformer as one module, which DDP wraps and torch.compile
    compiles whole (the loss with the model): forward(src, tgt_in, tgt_out, positions) gives the
    summed smoothed loss and NLL over the real target tokens, `positions` their flat indices into
    tgt_out (aiayn.data.batching.Batch).

    With `rdrop` > 0 a training batch runs twice through the model, under two dropout masks, and
    the loss adds `rdrop` times the symmetric KL divergence of the two output distributions
    (R-Drop, Liang et al. 2021, Eq. 3), halved with the two cross-entropies so that the figures
    stay per target token."""

    def __init__(self, model: nn.Module, smoothing: float, rdrop: float = 0.0):
        super().__init__()
        self.model, self.smoothing, self.rdrop = model, smoothing, rdrop

    def forward(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        if self.rdrop > 0 and self.model.training:
            return self._rdrop_loss(src, tgt_in, tgt_out, positions)
        output = self.model.teacher_forcing_output(src, tgt_in)
        real = output.flatten(0, 1).index_select(0, positions)
        target = tgt_out.flatten().index_select(0, positions)
        return projected_label_smoothed_loss(real, self.model.output_projection, target, self.smoothing)

    def _rdrop_loss(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(NLL_1 + NLL_2 + rdrop * (KL(P1||P2) + KL(P2||P1)) / 2) / 2, summed over the tokens: the
        batch doubled in one pass, so each half has its own dropout mask."""
        output = self.model.teacher_forcing_output(torch.cat([src, src]), torch.cat([tgt_in, tgt_in]))
        real = output.flatten(0, 1).index_select(0, torch.cat([positions, positions + tgt_out.numel()]))
        target = tgt_out.flatten().index_select(0, positions)
        loss, nll = projected_label_smoothed_loss(real, self.model.output_projection, torch.cat([target, target]),
                                                  self.smoothing, self.rdrop)
        return loss / 2, nll / 2
