"""Options several commands share, defined once (flag, type, wording); a command adds what its use
of the option is about."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

_WEIGHTS = click.Path(dir_okay=False, path_type=Path)


def device(*, default: str | None = "auto", extra: str = "") -> Decorator[Any]:
    """``--device``: where the model runs (``default`` None: the recipe's)."""
    return click.option("--device", default=default, show_default=default is not None,
                        help="auto, cpu, cuda, cuda:N or mps." + (f" {extra}" if extra else ""))


def quiet() -> Decorator[Any]:
    """``--quiet``: no progress bars."""
    return click.option("--quiet", is_flag=True, help="No progress bars.")


def sam_checkpoint(use: str) -> Decorator[Any]:
    """``--sam-checkpoint FILE``: Segment Anything's official weights, for ``use``."""
    return click.option("--sam-checkpoint", type=_WEIGHTS,
                        help=f"Official SAM weights (sam_vit_*.pth): {use}")


def hipt_checkpoint(use: str) -> Decorator[Any]:
    """``--hipt-checkpoint FILE`` (also spelt ``--pathology-checkpoint``): Fp's weights, for ``use``."""
    return click.option("--hipt-checkpoint", "--pathology-checkpoint", "hipt_checkpoint", type=_WEIGHTS,
                        help=f"Fp weights: HIPT's vit256_small_dino.pth or the pathology foundation model's "
                             f"file (UNI, Virchow2, ...): {use}")


def qc_config() -> Decorator[Any]:
    """``--qc-config FILE``: QC settings over the packaged defaults."""
    return click.option("--qc-config", type=click.Path(dir_okay=False, path_type=Path),
                        help="QC settings YAML (overrides of wsiseg/qc/default.yaml; see README, Quality "
                             "control).")


def slide_mpp() -> Decorator[Any]:
    """``--slide-mpp``: the slide's level-0 resolution where it records none (or to override it)."""
    return click.option("--slide-mpp", type=click.FloatRange(min=0, min_open=True),
                        help="The slides' level-0 um/px: needed for slides that record none (plain "
                             "PNG/JPEG images), overrides what a slide records.")
