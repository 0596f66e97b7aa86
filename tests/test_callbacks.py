"""The side effects of a run are callbacks, written by process 0 only; figures are drawn
without pyplot, and importing spikefit loads no plotting library."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from matplotlib.figure import Figure

from spikefit.tasks.callbacks import WriteFigures, WriteSummary


class Task:
    """What the callbacks read from a task: a summary, its description and figures."""

    def __init__(self, summary: dict) -> None:
        self.result = summary

    def summary(self) -> dict:
        return self.result

    @staticmethod
    def describe(summary: dict) -> str:
        return f"steps: {summary['steps']}"

    def figures(self) -> dict[str, Figure]:
        figure = Figure(figsize=(2, 2))
        figure.subplots().plot([0, 1], [1, 0])
        return {"line": figure}


class Experiment:
    """A TensorBoard writer that records the figures added to it."""

    def __init__(self) -> None:
        self.figures = []

    def add_figure(self, name: str, figure: Figure, step: int) -> None:
        self.figures.append((name, step))


def trainer(log_dir: Path, rank_zero: bool = True) -> SimpleNamespace:
    logger = SimpleNamespace(experiment=Experiment())
    return SimpleNamespace(
        log_dir=str(log_dir),
        default_root_dir=".",
        is_global_zero=rank_zero,
        logger=logger,
        global_step=7,
    )


def test_figures_go_to_png_files_and_tensorboard(tmp_path):
    run = trainer(tmp_path / "run")
    WriteFigures().on_fit_end(run, Task({}))
    assert (tmp_path / "run" / "line.png").stat().st_size > 0
    assert run.logger.experiment.figures == [("line", 7)]


def test_summary_is_written_and_described_by_process_zero_only(tmp_path, capsys):
    WriteSummary().on_fit_end(trainer(tmp_path / "other", rank_zero=False), Task({"steps": 3}))
    WriteSummary().on_fit_end(trainer(tmp_path / "empty"), Task({}))  # nothing to report
    assert not (tmp_path / "other").exists() and not (tmp_path / "empty").exists()
    WriteSummary().on_fit_end(trainer(tmp_path / "run"), Task({"steps": 3}))
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"steps": 3}
    assert capsys.readouterr().out == f"steps: 3\nsummary: {tmp_path / 'run' / 'summary.json'}\n"


def test_spikefit_modules_import_no_matplotlib():
    """No spikefit module imports matplotlib at import time (the figures import it when they
    are drawn). Lightning's torchmetrics imports matplotlib.pyplot itself, so the check
    records who imports it, and which modules importing spikefit adds to sys.modules."""
    code = """
import builtins, sys
import lightning, torchmetrics
importers, real_import = set(), builtins.__import__

def spy(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if name.partition(".")[0] == "matplotlib" and importer.startswith("spikefit"):
        importers.add(importer)
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = spy
before = set(sys.modules)
import spikefit.cli, spikefit.tasks
added = sorted(name for name in set(sys.modules) - before if name.startswith("matplotlib"))
assert not importers and not added, (importers, added)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
