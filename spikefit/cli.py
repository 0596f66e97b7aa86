"""Command line: ``python -m spikefit fit [--config FILE] [--option value ...]``."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from spikefit.data import NetworkDataModule
from spikefit.models import RunawayActivityError
from spikefit.tasks import RateCalibration

TRAINER_DEFAULTS = {
    "max_epochs": 300,
    "check_val_every_n_epoch": 10,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 1,
    "accelerator": "cpu",
}


def main(args: list[str] | None = None) -> None:
    """Runs the CLI; bad input ends with a one-line error and exit status 2."""
    try:
        LightningCLI(RateCalibration, NetworkDataModule, trainer_defaults=TRAINER_DEFAULTS,
                     args=args, seed_everything_default=0)
    except (ValueError, FileNotFoundError, RunawayActivityError, FloatingPointError) as error:
        print(f"spikefit: error: {error}", file=sys.stderr)
        sys.exit(2)
