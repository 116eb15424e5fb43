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
    tokens: int


class _LabelSmoothedCrossEntropy(torch.autograd.Function):
    """Per-token smoothed loss and NLL from logits [N, V], with a hand-written backward.

    loss = (1 - eps) * (lse - logit[target]) + eps * (lse - mean(logits)), lse = logsumexp(logits);
    d loss / d logits = softmax(logits) - (1 - eps) * onehot(target) - eps / V.
    Autograd through log_softmax + gather + mean materialises several [N, V] float32 tensors;
    this keeps only the logits and one [N] vector, and the backward writes one [N, V] tensor.
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
    def backward(ctx, grad_smoothed: Tensor, grad_nll: Tensor) -> tuple[Tensor | None, ...]:
        logits, target, weight, lse = ctx.saved_tensors
        eps = ctx.smoothing
        grad = logits.float().sub_(lse[:, None]).exp_().sub_(eps / logits.size(-1))
        grad.scatter_add_(-1, target[:, None], torch.full_like(lse[:, None], -(1.0 - eps)))
        grad.mul_((grad_smoothed * weight)[:, None])
        return grad.to(logits.dtype), None, None, None


def label_smoothed_loss(logits: Tensor, target: Tensor, pad_id: int, smoothing: float = 0.1) -> LossSums:
    """Cross-entropy against (1 - eps) on the true token + eps spread evenly over the vocabulary.

    Computed in float32 whatever the logits' dtype (bf16 logits would lose the small differences
    that matter here). Padding positions count zero; a batch with no real token gives zero sums
    rather than NaN. The NLL is for logging and carries no gradient.
    """
    vocab = logits.size(-1)
    flat_target = target.reshape(-1)
    weight = (flat_target != pad_id).float()
    smoothed, nll = _LabelSmoothedCrossEntropy.apply(logits.reshape(-1, vocab), flat_target, weight, smoothing)
    return LossSums(smoothed=smoothed.sum(), nll=nll.detach().sum(), tokens=int(weight.sum()))
