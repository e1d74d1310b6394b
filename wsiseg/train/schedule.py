"""Learning-rate schedule of the paper: linear warm-up, then step decays (x ``gamma`` at milestones)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, warmup_steps: int, milestone_steps: list[int], gamma: float) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based).

    Warm-up ramps linearly ``(step + 1) / warmup_steps`` to 1; afterwards the factor is
    ``gamma ** (number of milestones <= step)``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return float(gamma ** sum(step >= m for m in milestone_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, *, warmup: float, milestones: list[float],
                    gamma: float, steps_per_unit: int) -> LambdaLR:
    """A per-optimizer-step scheduler; ``warmup`` and ``milestones`` are in units of ``steps_per_unit`` steps
    (an epoch's optimizer steps for ``schedule_unit: epoch``, 1 for ``step``)."""
    warmup_steps = round(warmup * steps_per_unit)
    milestone_steps = [round(m * steps_per_unit) for m in milestones]
    return LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, milestone_steps, gamma))
