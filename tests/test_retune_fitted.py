"""Re-tuning a fitted network: RateCalibration loads a fit's model state, network and
recorded rates and tunes every unit's bias b until each unit fires at its own rate, from a
network that runs away or falls silent; from Python and from the command line (the tuned
state written beside, the inputs untouched); wrong inputs end in one line."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch_geometric.data import Data

from spikefit.checks import InputError
from spikefit.cli import main
from spikefit.data import NetworkDataModule
from spikefit.datasets import NormalGenerator, save_network
from spikefit.models import FilterGLM
from spikefit.tasks import RateCalibration
from spikefit.tasks.calibration import SafeguardedNewton
from tests import QUIET
from tests.test_filter_glm import TRUE_SELF

CONFIG = Path(__file__).parent.parent / "configs" / "retune_fitted.yaml"
CLI_QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
#: The fitted model's arguments other than the config's (4 functions over 30 ms, dt 1 ms),
#: and windows of 500 steps: these units fire at 10-40 Hz, not the few Hz of a recording.
CLI_MODEL = ["--model.model.window_ms", "30", "--model.model.n_basis", "4"]
CLI_WINDOW = ["--model.window_steps", "500"]
N = 8
#: Every unit's recorded rate (Hz).
RATES = torch.linspace(10.0, 40.0, N).tolist()
#: Every unit's rate must come within this relative error of its own target.
NEURON_TOLERANCE = 0.05
#: The fitted biases of a network that runs away (650-1000 Hz) and one that falls silent.
RUNS_AWAY, SILENT = -2.0, -8.0


def excitatory_network() -> Data:
    """8 neurons, every coupling filter excitatory (4 weights per edge, decaying over lags):
    at b = -2 every unit fires at 650-1000 Hz, at b = -8 below 1 Hz."""
    data = NormalGenerator(N, mean=0, std=3, glorot=True, seed=2).generate(1)[0]
    data.W0 = 0.4 * data.W0.abs().unsqueeze(1) * torch.tensor([1.0, 0.6, 0.3, 0.1])
    return data


def fitted_model(b: float) -> FilterGLM:
    """A fitted FilterGLM: a refractory post-spike filter, bias ``b`` for every unit."""
    return FilterGLM(window_ms=30, n_basis=4, b=[b] * N, self_weights=TRUE_SELF)


def rates_hz(model: FilterGLM, data: Data, steps: int, seed: int) -> torch.Tensor:
    """Every unit's rate [N] (Hz) in a fresh simulation of ``steps`` steps."""
    spikes = model.simulate(data, steps, seed=seed, equilibration_steps=1_000, verbose=False)
    return spikes.double().mean(dim=1) * 1000 / float(model.dt)


def binomial_se_hz(steps: int) -> torch.Tensor:
    """The binomial standard error [N] (Hz) of every unit's rate counted over ``steps``
    Bernoulli steps of 1 ms at its target rate."""
    p = torch.tensor(RATES, dtype=torch.float64) / 1000
    return (p * (1 - p) / steps).sqrt() * 1000


def assert_rates_met(rates: torch.Tensor, validation_steps: int, steps: int) -> None:
    """Every unit's simulated ``rates`` (over ``steps`` fresh steps) within its target's
    tolerance, widened by 4 binomial standard errors of the calibration's validation
    (``validation_steps`` in all, which judged the tolerance) and of the ``steps``."""
    target = torch.tensor(RATES, dtype=torch.float64)
    allowed = NEURON_TOLERANCE * target + 4 * (
        binomial_se_hz(validation_steps) + binomial_se_hz(steps)
    )
    assert ((rates - target).abs() <= allowed).all(), (rates.tolist(), allowed.tolist())


def retune(model: FilterGLM, **options) -> RateCalibration:
    return RateCalibration(
        model,
        tune=["b"],
        per_neuron=["b"],
        target_rate_hz=None,
        neuron_rates_hz=RATES,
        tolerance=NEURON_TOLERANCE,
        neuron_tolerance=NEURON_TOLERANCE,
        figures=False,
        **options,
    )


def networks(data: Data) -> NetworkDataModule:
    module = NetworkDataModule(n_networks=1, batch_size=1)
    module.networks = [data]
    return module


@pytest.mark.parametrize("start", [RUNS_AWAY, SILENT], ids=["runs_away", "silent"])
def test_every_unit_reaches_its_own_rate(start, tmp_path):
    data = excitatory_network()
    model = fitted_model(start)
    before = rates_hz(model, data, 2_000, seed=5)
    target = torch.tensor(RATES, dtype=torch.float64)
    assert (before > 10 * target).all() if start == RUNS_AWAY else (before < target / 5).all()
    task = retune(model, solver=SafeguardedNewton())
    L.Trainer(max_epochs=60, default_root_dir=tmp_path, **QUIET).fit(task, networks(data))
    assert torch.equal(task.model.self_weights, torch.tensor(TRUE_SELF))  # b alone moved
    summary = json.loads((tmp_path / "summary.json").read_text())
    achieved = torch.tensor(summary["achieved_rate_hz"]["per_neuron"])
    assert summary["converged"] and summary["neuron_tolerance"] == NEURON_TOLERANCE
    assert summary["targets"]["per_neuron"] == pytest.approx(RATES)
    assert ((achieved - target).abs() <= NEURON_TOLERANCE * target).all()  # each unit judged
    # enough validation trials for a Poisson standard error of a third of the tolerance
    # at the slowest unit's rate
    spikes = min(RATES) * summary["validation_steps"] / 1000
    assert summary["validation_trials"] == math.ceil(9 / (NEURON_TOLERANCE**2 * spikes))
    steps = 200_000
    validation = summary["validation_steps"] * summary["validation_trials"]
    assert_rates_met(rates_hz(task.model, data, steps, seed=99), validation, steps)
    assert (tmp_path / "tuned_model.pt").is_file()


def digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]


def fit_files(directory: Path, b: float = SILENT) -> dict[str, Path]:
    """What a likelihood fit leaves in its run directory: the model state, the network and a
    summary.json whose posterior-predictive check holds the recorded rates."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "state": directory / "fitted_model.pt",
        "network": directory / "fitted_network.pt",
        "summary": directory / "summary.json",
    }
    fitted_model(b).save(files["state"])
    save_network(excitatory_network(), files["network"])
    check = {"stable": False, "recorded_rate_hz": RATES}
    files["summary"].write_text(json.dumps({"task": "likelihood", "posterior_predictive": check}))
    return files


def retune_args(files: dict[str, Path], root: Path, rates: str | None = None) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIG),
        "--model.model_state",
        str(files["state"]),
        "--data.network",
        str(files["network"]),
        "--model.neuron_rates_hz",
        str(files["summary"]) if rates is None else rates,
        *CLI_MODEL,
        *CLI_WINDOW,
        "--model.neuron_tolerance",
        str(NEURON_TOLERANCE),
        "--trainer.default_root_dir",
        str(root),
        *CLI_QUIET,
    ]


def test_the_command_line_retunes_a_fit_and_the_tuned_state_simulates_back(tmp_path):
    files = fit_files(tmp_path / "fit")
    before = digest(list(files.values()))
    main(retune_args(files, tmp_path / "retune"))
    run = tmp_path / "retune" / "lightning_logs" / "version_0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["converged"] and summary["solver"] == "SafeguardedNewton"
    assert summary["targets"]["per_neuron"] == pytest.approx(RATES)
    assert len(summary["achieved_rate_hz"]["per_neuron"]) == N
    assert digest(list(files.values())) == before  # the fit's files are only read
    tuned = FilterGLM(window_ms=30, n_basis=4)
    tuned.load(run / "tuned_model.pt")
    assert tuned.b.tolist() == pytest.approx(summary["parameters"]["b"])
    assert (tuned.b > SILENT).all()
    steps = 100_000
    main(
        ["simulate", "--model", "spikefit.models.FilterGLM"]
        + ["--model.window_ms", "30", "--model.n_basis", "4"]
        + ["--model_state", str(run / "tuned_model.pt"), "--network", str(files["network"])]
        + ["--n_steps", str(steps), "--seed", "7", "--output", str(tmp_path / "back.npy")]
    )
    rates = torch.from_numpy(np.load(tmp_path / "back.npy")).double().mean(dim=1) * 1000
    validation = summary["validation_steps"] * summary["validation_trials"]
    assert_rates_met(rates, validation, steps)


def negative_rate(directory: Path) -> str:
    np.save(directory / "rates.npy", np.array([10.0, 20.0, 30.0, -5.0, 10, 10, 10, 10]))
    return str(directory / "rates.npy")


def nan_rate(directory: Path) -> str:
    np.save(directory / "rates.npy", np.array([math.nan] + [10.0] * (N - 1)))
    return str(directory / "rates.npy")


def no_recorded_rates(directory: Path) -> str:
    (directory / "calibration.json").write_text(json.dumps({"task": "calibration"}))
    return str(directory / "calibration.json")


def other_settings(files: dict[str, Path]) -> None:
    FilterGLM(window_ms=20, n_basis=4).save(files["state"])  # T = 20 steps, not 30


@pytest.mark.parametrize(
    ("rates", "damage", "field", "problem"),
    [
        (lambda d: "[10, 20, 30]", None, "model.neuron_rates_hz", "3 rates for a network of 8"),
        (negative_rate, None, "model.neuron_rates_hz[3]", "-5.0 is out of range"),
        (nan_rate, None, "model.neuron_rates_hz[0]", "nan is not finite"),
        (lambda d: str(d / "none.json"), None, "none.json", "could not be read"),
        (no_recorded_rates, None, "calibration.json", "holds no posterior_predictive"),
        (None, lambda f: f["state"].unlink(), "fitted_model.pt", "could not be read"),
        (None, lambda f: f["network"].unlink(), "fitted_network.pt", "could not be read"),
        (None, other_settings, "fitted_model.pt", "was saved with other settings (T)"),
    ],
    ids=[
        "rates_of_another_size",
        "negative_rate",
        "nan_rate",
        "missing_rates",
        "summary_without_rates",
        "missing_state",
        "missing_network",
        "state_of_other_settings",
    ],
)
def test_bad_input_is_one_line(rates, damage, field, problem, tmp_path, capsys):
    files = fit_files(tmp_path / "fit")
    if damage is not None:
        damage(files)
    args = retune_args(files, tmp_path / "retune", rates(tmp_path) if rates else None)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert exit_info.value.code == 2 and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("spikefit: error: "), err[-2000:]
    message = lines[0].removeprefix("spikefit: error: ")
    assert message.split(": ", 1)[0].endswith(field) and problem in message, message
    assert " (expected " in message
    assert not list((tmp_path / "retune").rglob("tuned_model.pt"))


def test_retuning_refuses_what_it_cannot_judge_or_step(tmp_path):
    with pytest.raises(InputError, match=r"^RateCalibration\.neuron_tolerance: judges"):
        RateCalibration(fitted_model(-4.0), tune=["b"], neuron_tolerance=0.1)
    with pytest.raises(InputError, match=r"^NetworkDataModule\.network: given together"):
        NetworkDataModule(root=str(tmp_path), network=str(tmp_path / "n.pt"))
    with pytest.raises(InputError, match=r"^SafeguardedNewton\.radius: 0 is out of range"):
        SafeguardedNewton(radius=0)
    task = RateCalibration(  # a shared target too: no longer one error per value
        fitted_model(-4.0),
        tune=["b"],
        per_neuron=["b"],
        target_rate_hz=20.0,
        neuron_rates_hz=RATES,
        solver=SafeguardedNewton(),
        n_trials=2,
        window_steps=50,
        figures=False,
    )
    with pytest.raises(InputError, match=r"^RateCalibration\.solver: SafeguardedNewton steps"):
        L.Trainer(max_epochs=1, **QUIET).fit(task, networks(excitatory_network()))


def test_a_resumed_retune_takes_the_steps_of_an_uninterrupted_one(tmp_path):
    """The trust radii and the last step's residuals are the optimizer's state: a run
    resumed from its checkpoint moves every unit as one that never stopped."""
    data = excitatory_network()
    quiet = {**QUIET, "enable_checkpointing": True}
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = retune(fitted_model(RUNS_AWAY), solver=SafeguardedNewton())
    L.Trainer(max_epochs=3, callbacks=[checkpoint], default_root_dir=tmp_path, **quiet).fit(
        first, networks(data)
    )
    tuned = []
    for ckpt_path in (tmp_path / "last.ckpt", None):
        task = retune(fitted_model(RUNS_AWAY), solver=SafeguardedNewton())
        trainer = L.Trainer(max_epochs=6, default_root_dir=tmp_path, **QUIET)
        trainer.fit(task, networks(data), ckpt_path=ckpt_path)
        tuned.append(task.model.b.detach())
    assert torch.equal(*tuned) and not torch.equal(tuned[0], first.model.b)
