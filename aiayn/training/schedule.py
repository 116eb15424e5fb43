"""§5.3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), times a scale factor."""
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
