"""Command line: ``python -m spikefit fit [--config FILE] [--option value ...]``."""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
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


class SpikefitCLI(LightningCLI):
    """LightningCLI whose ``--ckpt_path last`` resumes the newest run under the root dir."""

    def before_fit(self) -> None:
        if self.config_init[self.subcommand].get("ckpt_path") != "last":
            return
        root = Path(self.trainer.default_root_dir)
        candidates = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--ckpt_path last: no checkpoints/last.ckpt under {root}")
        self.config_init[self.subcommand]["ckpt_path"] = str(candidates[-1])


def main(args: list[str] | None = None) -> None:
    """Runs the CLI; bad input ends with a one-line error and exit status 2."""
    try:
        checkpoints = {"callbacks": [ModelCheckpoint(save_last=True)]}  # fresh for every run
        SpikefitCLI(RateCalibration, NetworkDataModule,
                    trainer_defaults={**TRAINER_DEFAULTS, **checkpoints},
                    args=args, seed_everything_default=0)
    except (ValueError, FileNotFoundError, RunawayActivityError, FloatingPointError) as error:
        print(f"spikefit: error: {error}", file=sys.stderr)
        sys.exit(2)
