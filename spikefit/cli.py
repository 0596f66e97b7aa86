"""Command line.

``python -m spikefit fit [--config FILE] [--option value ...]`` runs a Lightning task: the
rate calibration by default (``RateCalibration`` on ``NetworkDataModule``), or any other task
and data module named in the config (``model.class_path: spikefit.tasks.LikelihoodFit``,
``data.class_path: spikefit.data.SpikeTrainDataModule``).

``python -m spikefit simulate [--config FILE] [--option value ...]`` simulates a model on a
network and writes the spikes and the true connectivity, for fitting later.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
from jsonargparse import CLI, lazy_instance
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from spikefit.data import NetworkDataModule
from spikefit.data.networks import DEFAULT_GENERATOR
from spikefit.datasets import ConnectivityDataset, ConnectivityGenerator, graph_to_dense
from spikefit.io import write_nwb, write_phy, write_raster, write_spike_times
from spikefit.models import BaseModel, RunawayActivityError
from spikefit.tasks import RateCalibration
from spikefit.tasks.calibration import DEFAULT_MODEL

TRAINER_DEFAULTS = {
    "max_epochs": 300,
    "check_val_every_n_epoch": 1,  # calibration validates only where it can succeed
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 1,
    "accelerator": "cpu",
}
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, RunawayActivityError,
               FloatingPointError, ImportError)


class SpikefitCLI(LightningCLI):
    """LightningCLI with the calibration as default task, whose ``--ckpt_path last`` resumes
    the newest run under the root dir."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"model": lazy_instance(RateCalibration),
                             "data": lazy_instance(NetworkDataModule)})

    def before_fit(self) -> None:
        if self.config_init[self.subcommand].get("ckpt_path") != "last":
            return
        root = Path(self.trainer.default_root_dir)
        candidates = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--ckpt_path last: no checkpoints/last.ckpt under {root}")
        self.config_init[self.subcommand]["ckpt_path"] = str(candidates[-1])


def simulate(model: BaseModel = DEFAULT_MODEL,
             generator: ConnectivityGenerator = DEFAULT_GENERATOR,
             network: str | None = None, n_steps: int = 100_000, seed: int = 0,
             equilibration_steps: int = 100, output: str = "simulated/spikes.npz",
             sample_rate: float = 30_000.0, overwrite: bool = False) -> Path:
    """Simulates ``model`` on one network and writes its spikes and true connectivity.

    Args:
        model: the spiking network model.
        generator: draws the network (unless ``network`` is given).
        network: a folder of connectivity matrices; its first matrix is simulated.
        n_steps: recorded steps (one bin of ``model.dt`` ms each).
        seed: simulation seed.
        equilibration_steps: steps run first and not written.
        output: where the spikes go, the format by suffix: ``.npz`` spike times, ``.npy``/
            ``.pt`` raster, ``.nwb`` NWB, no suffix a Kilosort/phy folder. The true
            connectivity goes beside it as ``W0.npy`` (dense [N, N], indexed [pre, post]).
        sample_rate: sampling rate of a phy folder, in Hz.
        overwrite: replace existing files.
    """
    data = ConnectivityDataset(network)[0] if network is not None else generator.generate(1)[0]
    output_path = Path(output)
    weights_path = (output_path if not output_path.suffix else output_path.parent) / "W0.npy"
    if weights_path.exists() and not overwrite:
        raise FileExistsError(f"{weights_path} exists; pass --overwrite true to replace it")
    spikes = model.simulate(data, n_steps, seed=seed, equilibration_steps=equilibration_steps)
    dt = float(model.dt)
    writers = {".npz": lambda: write_spike_times(output_path, spikes, dt, overwrite=overwrite),
               ".npy": lambda: write_raster(output_path, spikes, overwrite=overwrite),
               ".pt": lambda: write_raster(output_path, spikes, overwrite=overwrite),
               ".nwb": lambda: write_nwb(output_path, spikes, dt, overwrite=overwrite),
               "": lambda: write_phy(output_path, spikes, dt, sample_rate, overwrite=overwrite)}
    if output_path.suffix not in writers:
        raise ValueError(f"output: unknown format {output_path.suffix!r} (expected .npz, .npy, "
                         f".pt, .nwb or a folder name without suffix for phy)")
    writers[output_path.suffix]()
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(weights_path, graph_to_dense(data).numpy())
    rate = spikes.float().mean().item() / dt * 1000
    print(f"spikefit simulate: {data.num_nodes} neurons × {n_steps} steps of {dt:g} ms, "
          f"{rate:.2f} Hz mean rate → {output_path} (+ {weights_path})")
    return output_path


def main(args: list[str] | None = None) -> None:
    """Runs the CLI; bad input ends with a one-line error and exit status 2."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv[:1] == ["simulate"]:
            CLI(simulate, args=argv[1:])
        else:
            checkpoints = {"callbacks": [ModelCheckpoint(save_last=True)]}  # fresh every run
            SpikefitCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True,
                        subclass_mode_data=True, args=args, seed_everything_default=0,
                        auto_configure_optimizers=False,
                        trainer_defaults={**TRAINER_DEFAULTS, **checkpoints})
    except USER_ERRORS as error:
        print(f"spikefit: error: {error}", file=sys.stderr)
        sys.exit(2)
