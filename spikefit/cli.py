"""Command line: ``python -m spikefit {fit,simulate} [--config FILE] [--option value ...]``.

``fit`` runs a Lightning task: the rate calibration by default (``RateCalibration`` on
``NetworkDataModule``), or any other task and data module named in the config
(``model.class_path: spikefit.tasks.LikelihoodFit``, ``data.class_path:
spikefit.data.SpikeTrainDataModule``). ``simulate`` simulates a model on a network and writes
the spikes and the true connectivity, for fitting later.

Every user mistake ends with one line ``spikefit: error: <field or file>: <what is wrong>
(expected …)`` and exit status 2 (:mod:`spikefit.cli_errors`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import yaml
from jsonargparse import ArgumentParser, lazy_instance
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from torch_geometric.data import Data

from spikefit.checks import InputError, one_of, whole
from spikefit.cli_errors import explain
from spikefit.data import NetworkDataModule
from spikefit.data.networks import DEFAULT_GENERATOR
from spikefit.datasets import (
    ConnectivityDataset,
    ConnectivityGenerator,
    graph_to_dense,
    load_network,
)
from spikefit.files import load_file
from spikefit.io import write_nwb, write_phy, write_raster, write_spike_times
from spikefit.models import BaseModel
from spikefit.tasks import RateCalibration
from spikefit.tasks.calibration.run_files import load_model_state
from spikefit.tasks.callbacks import DiscardFailedRun
from spikefit.tasks.defaults import DEFAULT_MODEL

PROG = "python -m spikefit"
OVERVIEW = f"""usage: {PROG} {{fit,simulate}} [--config FILE] [--option value ...]

Simulate networks of stochastic spiking neurons and fit them.

commands:
  fit        calibrate a model to target firing rates (the default task, RateCalibration), or
             fit it to recorded spikes (model.class_path: spikefit.tasks.LikelihoodFit)
  simulate   simulate a model on a network; write its spikes and true connectivity

  {PROG} fit                            the embedded default calibration
  {PROG} fit --config configs/populations.yaml
  {PROG} fit --help                     every option of fit, the default task's included
  {PROG} fit --model.help LikelihoodFit the options of another task
  {PROG} simulate --help                every option of simulate
"""
TRAINER_DEFAULTS = {
    "max_epochs": 300,
    "check_val_every_n_epoch": 1,  # calibration validates only where it can succeed
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 1,
    "accelerator": "cpu",
}
#: Where ``fit --help`` shows the options of the default task and data.
DEFAULT_HELP = (("--model.help", "RateCalibration"), ("--data.help", "NetworkDataModule"))


class SpikefitCLI(LightningCLI):
    """LightningCLI with the calibration as default task and ``fit`` as its one command.

    Parser errors, refused constructor arguments and trainer settings, and errors of the run
    become one :class:`~spikefit.checks.InputError` naming the option in full.
    ``--ckpt_path last`` resumes the newest run of the same task under the root dir; a
    checkpoint is read with ``weights_only=True`` and must be one of this task."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": LightningCLI.subcommands()["fit"]}

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(
            {"model": lazy_instance(RateCalibration), "data": lazy_instance(NetworkDataModule)}
        )

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except Exception as error:
            raise self.explained(error) from None

    def explained(self, error: BaseException) -> BaseException:
        """``error`` as the one-line user error it stands for (``error`` itself if a bug)."""
        config = getattr(self, "config", None)
        if config is not None and config.get("subcommand"):
            config = config[config.subcommand]
        found = explain(error, config.as_dict() if config is not None else None)
        return error if found is None else found

    def _parse_ckpt_path(self) -> None:
        """Resolves ``ckpt_path`` and checks the file (replaces Lightning's reading of the
        checkpoint's hyperparameters over the command line: the command line decides)."""
        config = self.config[self.config.subcommand]
        if config.get("ckpt_path") is None:
            return
        task = config.model.class_path.rsplit(".", 1)[-1]
        path = (
            newest_checkpoint(Path(config.trainer.default_root_dir or "."), task)
            if config.ckpt_path == "last"
            else Path(config.ckpt_path)
        )
        found = checkpoint_task(path)
        if found != task:
            raise InputError(
                "ckpt_path",
                f"{path} is a checkpoint of {found}",
                f"a checkpoint of {task}, the task of this run",
            )
        config.ckpt_path = str(path)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:
            raise self.explained(error) from None

    def fit(self, model: L.LightningModule, **kwargs: Any) -> None:
        try:
            self.trainer.fit(model, **kwargs)
        except Exception as error:
            found = self.explained(error)
            if found is error:
                raise
            raise found from None


def newest_checkpoint(root: Path, task: str) -> Path:
    """The newest ``checkpoints/last.ckpt`` of ``task`` under ``root``."""
    candidates = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    tasks = {path: checkpoint_task(path, strict=False) for path in candidates}
    own = [path for path in candidates if tasks[path] == task]
    if not own:
        others = sorted({name for name in tasks.values() if name})
        found = f" (only of {', '.join(others)})" if others else ""
        raise InputError(
            "ckpt_path",
            f"last: no checkpoint of {task} under {root}{found}",
            f"a run of {task} to resume under trainer.default_root_dir",
        )
    return own[-1]


def checkpoint_task(path: Path, strict: bool = True) -> str | None:
    """The task that wrote the Lightning checkpoint ``path``, read without running code.
    Raises InputError for a file that is no checkpoint (``strict``; else returns None)."""
    try:
        checkpoint = load_file(path, "a checkpoint (.ckpt) written by a spikefit run")
    except InputError:
        if strict:
            raise
        return None
    task = checkpoint.get("spikefit", {}).get("task") if isinstance(checkpoint, dict) else None
    if task is None and strict:
        raise InputError(
            str(path),
            "is not a checkpoint of a spikefit run",
            "checkpoints/last.ckpt of a run under lightning_logs/",
        )
    return task


def simulate(
    model: BaseModel = DEFAULT_MODEL,
    generator: ConnectivityGenerator = DEFAULT_GENERATOR,
    network: str | None = None,
    model_state: str | None = None,
    n_steps: int = 100_000,
    seed: int = 0,
    equilibration_steps: int = 100,
    output: str = "simulated/spikes.npz",
    sample_rate: float = 30_000.0,
    overwrite: bool = False,
) -> Path:
    """Simulates ``model`` on one network and writes its spikes and true connectivity.

    Args:
        model: the spiking network model.
        generator: draws the network (unless ``network`` is given).
        network: a folder of connectivity matrices, whose first matrix is simulated, or a
            network file of a fit (``fitted_network.pt``, :func:`~spikefit.datasets.load_network`).
        model_state: a state dict saved by the model's ``save`` (a fit's ``fitted_model.pt``),
            loaded into ``model`` first
            (:func:`~spikefit.tasks.calibration.run_files.load_model_state`).
        n_steps: recorded steps (one bin of ``model.dt`` ms each).
        seed: simulation seed.
        equilibration_steps: steps run first and not written.
        output: where the spikes go, the format by suffix: ``.npz`` spike times, ``.npy``/
            ``.pt`` raster, ``.nwb`` NWB, no suffix a Kilosort/phy folder. The true
            connectivity goes beside it as ``W0.npy`` (dense [N, N], indexed [pre, post];
            [N, N, B] for weights on a basis of B coupling kernels).
        sample_rate: sampling rate of a phy folder, in Hz.
        overwrite: replace existing files.
    """
    whole("n_steps", n_steps, 1)
    whole("equilibration_steps", equilibration_steps, 0)
    output_path = Path(output)
    one_of("output", output_path.suffix, [".npz", ".npy", ".pt", ".nwb", ""])
    weights_path = (output_path if not output_path.suffix else output_path.parent) / "W0.npy"
    if weights_path.exists() and not overwrite:
        raise InputError(
            str(weights_path), "exists", "a new path, or --overwrite true to replace it"
        )
    if model_state is not None:
        load_model_state(model, Path(model_state))
    data = network_of(network, generator)
    spikes = model.simulate(data, n_steps, seed=seed, equilibration_steps=equilibration_steps)
    dt = float(model.dt)
    writers = {
        ".npz": lambda: write_spike_times(output_path, spikes, dt, overwrite=overwrite),
        ".npy": lambda: write_raster(output_path, spikes, overwrite=overwrite),
        ".pt": lambda: write_raster(output_path, spikes, overwrite=overwrite),
        ".nwb": lambda: write_nwb(output_path, spikes, dt, overwrite=overwrite),
        "": lambda: write_phy(output_path, spikes, dt, sample_rate, overwrite=overwrite),
    }
    writers[output_path.suffix]()
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(weights_path, graph_to_dense(data).numpy())
    rate = spikes.float().mean().item() / dt * 1000
    print(
        f"spikefit simulate: {data.num_nodes} neurons × {n_steps} steps of {dt:g} ms, "
        f"{rate:.2f} Hz mean rate → {output_path} (+ {weights_path})"
    )
    return output_path


def network_of(network: str | None, generator: ConnectivityGenerator) -> Data:
    """The network to simulate: drawn from ``generator`` (``network`` None), the network file
    ``network`` or the first matrix of the folder ``network``."""
    if network is None:
        return generator.generate(1)[0]
    path = Path(network)
    return load_network(path) if path.is_file() else ConnectivityDataset(path)[0]


def run_simulate(argv: list[str]) -> None:
    """``simulate``: parse, instantiate and run, each failure named by its option."""
    parser = ArgumentParser(
        prog=f"{PROG} simulate",
        exit_on_error=False,
        description="Simulate a model on one network; write its spikes and true connectivity.",
    )
    parser.add_argument("-c", "--config", action="config", help="a YAML config file")
    parser.add_function_arguments(simulate)
    config = None
    try:
        config = parser.parse_args(argv)
        settings = parser.instantiate_classes(config)
        simulate(**{k: v for k, v in settings.items() if k != "config"})
    except Exception as error:
        found = explain(error, None if config is None else config.as_dict())
        if found is None:
            raise
        raise found from None


def fit_cli(argv: list[str]) -> SpikefitCLI:
    """The Lightning CLI of ``fit`` on ``argv`` (``fit`` first), run."""
    callbacks = [ModelCheckpoint(save_last=True), DiscardFailedRun()]  # fresh every run
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # args is argv here
    return SpikefitCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": callbacks},
        parser_kwargs={
            "prog": PROG,
            "exit_on_error": False,
            "description": OVERVIEW,
            "fit": {"exit_on_error": False},
        },
    )


def run_fit(argv: list[str]) -> None:
    """``fit``; its ``--help`` also lists the options of the default task and data."""
    if not {"-h", "--help"} & set(argv):
        fit_cli(argv)
        return
    for args in (argv, *([argv[0], *pair] for pair in DEFAULT_HELP)):
        try:
            fit_cli(args)
        except SystemExit:
            print()


def check_config_files(argv: list[str]) -> None:
    """Reads every ``--config`` file first, so that a missing or malformed one is named with
    its line (never executed: YAML only)."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag not in ("-c", "--config"):
            continue
        path = Path(value)
        try:
            content = yaml.safe_load(path.read_text())
        except OSError as error:
            raise InputError(
                value, (error.strerror or str(error)).lower(), "a YAML config file"
            ) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise InputError(value, f"{where}{problem}", "valid YAML") from None
        if content is not None and not isinstance(content, dict):
            raise InputError(
                value, f"holds a {type(content).__name__}", "a YAML mapping of options (key: value)"
            )


def main(args: list[str] | None = None) -> None:
    """Runs the CLI; a user mistake ends with one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if args is None else args)
    command = argv[0] if argv else None
    try:
        if command in (None, "-h", "--help"):
            print(OVERVIEW)
            return
        one_of("command", command, ["fit", "simulate"])
        check_config_files(argv[1:])
        if command == "simulate":
            run_simulate(argv[1:])
        else:
            run_fit(argv)
    except InputError as error:
        print(f"spikefit: error: {error}", file=sys.stderr)
        sys.exit(2)
