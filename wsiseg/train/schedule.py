"""Learning-rate schedule of the reference code: linear warm-up from 0, then step decays, per step."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, warmup_steps: int, milestone_steps: list[int], gamma: float) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based), as the reference's ``LambdaLR``:
    ``step / warmup_steps`` while ``step < warmup_steps`` (so the first step runs at lr 0), then
    ``gamma ** (number of milestones <= step)`` (1, 0.1, 0.01 for two milestones and gamma 0.1)."""
    if step < warmup_steps:
        return step / warmup_steps
    return float(gamma ** sum(step >= m for m in milestone_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, *, warmup: float, milestones: list[float],
                    gamma: float, steps_per_unit: int) -> LambdaLR:
    """A scheduler stepped after every optimiser step; ``warmup`` and ``milestones`` are in units of
    ``steps_per_unit`` optimiser steps (an epoch's for ``schedule_unit: epoch``, 1 for ``step``)."""
    warmup_steps = round(warmup * steps_per_unit)
    milestone_steps = [round(m * steps_per_unit) for m in milestones]
    return LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, milestone_steps, gamma))
