"""Lightning callbacks: the side effects of a run."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
from typing_extensions import override

from spikefit.datasets import save_network


class DiscardFailedRun(L.Callback):
    """Removes the run directory of a run that fails, when everything in it was written by
    this run and it holds no checkpoint to resume from: a failed run leaves no empty
    ``version_N`` folder behind, and nothing that was there before is touched."""

    def __init__(self) -> None:
        self.started = time.time()

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not trainer.is_global_zero or getattr(trainer.logger, "log_dir", None) is None:
            return
        log_dir = Path(trainer.logger.log_dir)  # not trainer.log_dir: a collective under DDP
        written = list(log_dir.glob("**/*")) if log_dir.is_dir() else []
        if (
            written
            and all(path.stat().st_mtime >= self.started - 1 for path in written)
            and not any(path.suffix == ".ckpt" for path in written)
        ):
            shutil.rmtree(log_dir)
            parent = log_dir.parent  # e.g. lightning_logs/, if this run made it
            if not any(parent.iterdir()) and parent.stat().st_mtime >= self.started - 1:
                parent.rmdir()


class RunOutput(L.Callback):
    """Something a task's results are written to at the end of a fit, by process 0, in the
    run directory (the logger's, else the trainer's root)."""

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP
        if trainer.is_global_zero:
            self.write(trainer, pl_module, log_dir)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        raise NotImplementedError


class WriteSummary(RunOutput):
    """``summary.json``: the task's ``summary()`` (nothing when it is empty), and its
    ``describe(summary)`` on the console with the file's path."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        summary = pl_module.summary()
        if not summary:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2))
        print(pl_module.describe(summary) + f"\nsummary: {path}")


class WriteFigures(RunOutput):
    """``<name>.png`` (120 dpi) for every figure of the task's ``figures()``, each also added
    to TensorBoard when the logger has it."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        for name, figure in pl_module.figures().items():
            log_dir.mkdir(parents=True, exist_ok=True)
            figure.savefig(log_dir / f"{name}.png", dpi=120, bbox_inches="tight")
            experiment = getattr(trainer.logger, "experiment", None)
            if hasattr(experiment, "add_figure"):
                experiment.add_figure(name, figure, trainer.global_step)


class WriteCouplingMatrix(RunOutput):
    """``fitted_W0.npy``: the task's ``coupling_matrix()``, dense [N, N] indexed [pre, post]."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        np.save(log_dir / "fitted_W0.npy", pl_module.coupling_matrix().detach().cpu().numpy())


class WriteConnections(RunOutput):
    """``connections.csv``: the columns of the task's ``connection_table()``, one row per
    fitted pair (nothing when it is None)."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        table = pl_module.connection_table()
        if table is None:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "connections.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(table)
            writer.writerows(zip(*table.values(), strict=True))


class WriteFilters(RunOutput):
    """``fitted_filters.npz``: the arrays of the task's ``fitted_filters()`` (nothing when it
    is None)."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        arrays = pl_module.fitted_filters()
        if arrays is None:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        np.savez(log_dir / "fitted_filters.npz", **arrays)


class WriteFittedModel(RunOutput):
    """``fitted_model.pt``, the task's ``fitted_model()`` by its own ``save`` (its state
    dict), and ``fitted_network.pt``, the task's ``fitted_network()``
    (:func:`~spikefit.datasets.save_network`): what ``python -m spikefit simulate`` runs
    (nothing when the fitted model is None)."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        model = pl_module.fitted_model()
        if model is None:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        model.save(log_dir / "fitted_model.pt")
        save_network(pl_module.fitted_network(), log_dir / "fitted_network.pt")
