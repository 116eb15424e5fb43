"""§5.3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), times a scale factor; and
BERT's linear decay on the same warm-up, which the Transformer's descendants may choose."""
from __future__ import annotations

import math


def learning_rate(step: int, d_model: int, warmup_steps: int = 4000, scale: float = 1.0) -> float:
    """Linear warm-up for `warmup_steps` steps, then decay with the inverse square root of the step.

    Steps count from 1 (the first optimizer update); the peak, at step == warmup_steps, is
    scale * (d_model * warmup_steps)^-0.5.
    """
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def peak_learning_rate(d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    return scale / math.sqrt(d_model * warmup_steps)


DECAYS = ("inverse-sqrt", "linear")


def linear_decay_rate(step: int, d_model: int, warmup_steps: int, scale: float, used: float) -> float:
    """BERT's linear decay (Devlin et al. 2019, appendix A.2) on the §5.3 scale: the §5.3 warm-up
    ramp, to the peak (d_model * warmup_steps)^-0.5 * scale, times the fraction of the training
    budget left (`used` is the fraction spent before this step, 0 to 1). The product falls to 0 at
    the end, so a run of fixed length ends with small steps instead of the §5.3 rate's large ones.
    The factor applies from the first step, so the rate is continuous (BERT's code jumps from the
    warm-up to the decay) and its top, at the end of the warm-up, is (1 - used) of the peak there:
    with 1,000 warm-up steps of about 5,700, about 0.82 of it.
    """
    left = min(max(1.0 - used, 0.0), 1.0)
    return peak_learning_rate(d_model, warmup_steps, scale) * min(max(step, 1) / warmup_steps, 1.0) * left
