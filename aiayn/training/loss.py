"""§5.4: label smoothing of value eps_ls = 0.1, over the whole vocabulary, padding ignored."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LossSums:
    """Sums over the real (non-pad) target tokens of a batch, so batches can be added up."""

    smoothed: Tensor  # the training objective, label-smoothed cross-entropy
    nll: Tensor  # plain negative log-likelihood, for perplexity
    tokens: Tensor  # a count, as a tensor: reading it would wait for the device


class _LabelSmoothedCrossEntropy(torch.autograd.Function):
    """Per-token smoothed loss and NLL from logits [N, V], with a hand-written backward.

    loss = (1 - eps) * (lse - logit[target]) + eps * (lse - mean(logits)), lse = logsumexp(logits);
    d loss / d logits = softmax(logits) - (1 - eps) * onehot(target) - eps / V, and
    d nll / d logits = softmax(logits) - onehot(target).
    Autograd through log_softmax + gather + mean materialises several [N, V] float32 tensors;
    this keeps only the logits and one [N] vector, and the backward writes one new [N, V] tensor
    (never into the caller's logits).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, weight: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
        logits32 = logits.float()
        lse = torch.logsumexp(logits32, dim=-1)
        nll = lse - logits32.gather(-1, target[:, None]).squeeze(-1)
        smoothed = (1.0 - smoothing) * nll + smoothing * (lse - logits32.mean(dim=-1))
        ctx.save_for_backward(logits, target, weight, lse)
        ctx.smoothing = smoothing
        return smoothed * weight, nll * weight

    @staticmethod
    def backward(ctx, grad_smoothed: Tensor | None, grad_nll: Tensor | None) -> tuple[Tensor | None, ...]:
        logits, target, weight, lse = ctx.saved_tensors
        eps = ctx.smoothing
        g_smoothed = weight * (grad_smoothed if grad_smoothed is not None else 0.0)
        g_nll = weight * (grad_nll if grad_nll is not None else 0.0)
        # A new float32 tensor (type promotion), never the caller's logits: `logits.float().sub_()`
        # would write into them when they are float32 already.
        grad = logits - lse[:, None]
        grad.exp_().mul_((g_smoothed + g_nll)[:, None]).sub_((eps / logits.size(-1)) * g_smoothed[:, None])
        grad.scatter_add_(-1, target[:, None], -((1.0 - eps) * g_smoothed + g_nll)[:, None])
        return grad.to(logits.dtype), None, None, None


def label_smoothed_loss(logits: Tensor, target: Tensor, pad_id: int, smoothing: float = 0.1) -> LossSums:
    """Cross-entropy against (1 - eps) on the true token + eps spread evenly over the vocabulary.

    Computed in float32 whatever the logits' dtype (bf16 logits would lose the small differences
    that matter here). Padding positions count zero; a batch with no real token gives zero sums
    rather than NaN. Both sums carry gradients (training uses the smoothed one; the NLL is there
    for perplexity, or for training without smoothing).
    """
    vocab = logits.size(-1)
    flat_target = target.reshape(-1)
    weight = (flat_target != pad_id).float()
    smoothed, nll = _LabelSmoothedCrossEntropy.apply(logits.reshape(-1, vocab), flat_target, weight, smoothing)
    return LossSums(smoothed=smoothed.sum(), nll=nll.sum(), tokens=weight.sum())
