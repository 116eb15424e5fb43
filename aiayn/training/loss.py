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


def label_smoothed_loss(logits: Tensor, target: Tensor, pad_id: int, smoothing: float = 0.1) -> LossSums:
    """Cross-entropy against (1 - eps) on the true token + eps spread evenly over the vocabulary.

    Computed in float32 whatever the logits' dtype (bf16 logits would lose the small differences
    that matter here). A batch with no real token gives zero sums rather than NaN.
    """
    log_probs = logits.float().log_softmax(dim=-1)
    real = target != pad_id
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    smoothed = (1.0 - smoothing) * nll + smoothing * uniform
    zero = torch.zeros((), device=logits.device)
    return LossSums(
        smoothed=torch.where(real, smoothed, zero).sum(),
        nll=torch.where(real, nll, zero).sum().detach(),
        tokens=int(real.sum()),
    )
