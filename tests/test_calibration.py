"""Calibration: teacher-forced inputs, the Gauss–Newton solver, targets reached on fresh
simulation, CLI, DDP, resume."""

import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from spikefit.checks import InputError
from spikefit.cli import main
from spikefit.data import NetworkDataModule
from spikefit.datasets import NormalGenerator
from spikefit.models import BernoulliGLM, PoissonGLM, RectifiedLNP, RectifiedSAM, ThresholdSAM
from spikefit.stimulus import RegularStimulus
from spikefit.tasks import RateCalibration, calibration
from spikefit.tasks.calibration import SEED_INTRODUCTION, log_below_target
from spikefit.tasks.gauss_newton import GaussNewton, Linearization, damped_least_squares
from spikefit.tasks.solvers import LBFGS
from tests import QUIET as QUIET_TRAINER
from tests.test_models import PAPER, ForcedBernoulli, batch_of_networks

CONFIGS = Path(__file__).parent.parent / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_cli(tmp_path: Path, *args: str) -> dict:
    """Runs ``python -m spikefit fit`` in this process; returns its summary.json."""
    main(["fit", *args, "--trainer.default_root_dir", str(tmp_path), *QUIET])
    newest = max(tmp_path.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def assert_targets_met(summary: dict, tolerance: float = 0.02) -> None:
    assert summary["converged"]
    for name, target in summary["targets"].items():
        achieved = torch.tensor(summary["achieved_rate_hz"][name]).mean().item()
        assert achieved == pytest.approx(torch.tensor(target).mean().item(), rel=tolerance)


@pytest.mark.parametrize("per_neuron_r", [False, True])
def test_teacher_forced_inputs_equal_engine_inputs(per_neuron_r):
    data = batch_of_networks()
    raster = (torch.rand(80, 300, generator=torch.Generator().manual_seed(4)) < 0.1).float()
    model = ForcedBernoulli(raster)
    if per_neuron_r:
        model.r.data = torch.linspace(0.2, 1.5, 80)
    model.add_stimulus(
        RegularStimulus(
            strength=3.0, period=7, tau=2, stop=300, stimulus_masks=torch.arange(80) % 3 == 0
        )
    )
    model.simulate(data, 300, seed=5, equilibration_steps=0, verbose=False)
    engine_inputs = torch.stack(model.inputs).t()[:, 20:]  # the engine's history starts earlier
    teacher_forced = model.input_from_spikes(data, raster.unsqueeze(0))[0, :, 20:]
    assert torch.allclose(engine_inputs, teacher_forced, atol=1e-4)


def test_activation_from_spikes_follows_the_update_rule():
    model = RectifiedSAM(**PAPER[RectifiedSAM])
    spikes = (torch.rand(2, 3, 400, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    activation, expected = torch.zeros(2, 3), []
    for step in range(400):
        expected.append(activation.clone())  # the input of a step sees the activation before it
        activation = model.update_activation(spikes[..., step], activation)
    assert torch.allclose(model.presynaptic_trace(spikes), torch.stack(expected, -1), atol=1e-5)


@pytest.mark.parametrize(
    "config", ["default", "rectified_lnp_ring", "sin_stimulus_amplitude", "populations"]
)
def test_shipped_configs_reach_their_targets(tmp_path, config):
    summary = run_cli(tmp_path, "--config", str(CONFIGS / f"{config}.yaml"))
    assert summary["task"] == "calibration" and summary["validation_steps"] >= 10_000
    assert set(summary) >= {"targets", "achieved_rate_hz", "parameters", "converged", "wall_time_s"}
    assert_targets_met(summary)
    run = next(tmp_path.rglob("summary.json")).parent
    assert {"raster.png", "rate_histogram.png", "config.yaml"} <= {p.name for p in run.iterdir()}
    assert list(run.glob("events.out.tfevents.*")) and list(run.glob("checkpoints/*.ckpt"))


def fit(
    task: RateCalibration, data: NetworkDataModule, tmp_path: Path, max_epochs: int = 30
) -> L.Trainer:
    """Runs ``task`` quietly, validating after every step (the validation skips itself far
    from the target)."""
    trainer = L.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, **QUIET_TRAINER)
    trainer.fit(task, data)
    return trainer


@pytest.mark.parametrize(
    "model, target",
    [
        (PoissonGLM(**{**PAPER[PoissonGLM], "T": 50}), 20.0),
        (RectifiedSAM(**{**PAPER[RectifiedSAM], "b": 0.02}), 10.0),
        (ThresholdSAM(**{**PAPER[ThresholdSAM], "r": 0.0002}), 40.0),
    ],
    ids=["PoissonGLM", "RectifiedSAM", "ThresholdSAM"],
)
def test_every_model_calibrates(tmp_path, model, target):
    task = RateCalibration(
        model,
        tune=["b"],
        target_rate_hz=target,
        n_trials=2,
        window_steps=300,
        tolerance=0.05,
        figures=False,
    )
    data = NetworkDataModule(
        NormalGenerator(20, 0, 1, glorot=True, seed=0), n_networks=4, batch_size=4
    )
    fit(task, data, tmp_path)
    assert_targets_met(task.summary(), tolerance=0.05)


def test_per_neuron_targets_with_per_neuron_thresholds(tmp_path):
    rates = [5.0] * 10 + [20.0] * 10
    task = RateCalibration(
        BernoulliGLM(**SEED_INTRODUCTION),
        tune=["theta"],
        per_neuron=["theta"],
        target_rate_hz=None,
        neuron_rates_hz=rates,
        n_trials=8,
        tolerance=0.05,
        figures=False,
    )
    data = NetworkDataModule(
        NormalGenerator(20, 0, 5, glorot=True, seed=1), n_networks=1, batch_size=1
    )
    fit(task, data, tmp_path)
    achieved = torch.tensor(task.achieved["per_neuron"])
    assert task.converged and task.model.theta.shape == (20,)
    assert achieved[:10].mean() == pytest.approx(5.0, rel=0.1)
    assert achieved[10:].mean() == pytest.approx(20.0, rel=0.1)
    assert task.model.theta[:10].mean() > task.model.theta[10:].mean()  # quieter = higher θ


def test_global_target_with_per_neuron_thresholds(tmp_path):
    """One target, one threshold per neuron: each moves by its own elasticity."""
    task = RateCalibration(
        BernoulliGLM(**SEED_INTRODUCTION),
        tune=["theta"],
        per_neuron=["theta"],
        target_rate_hz=10.0,
        figures=False,
    )
    data = NetworkDataModule(
        NormalGenerator(20, 0, 5, glorot=True, seed=1), n_networks=4, batch_size=4
    )
    fit(task, data, tmp_path)
    assert_targets_met(task.summary())
    assert task.model.theta.shape == (80,) and task.model.theta.std() > 0


class Recorder(RateCalibration):
    """Keeps the spikes and the linearization of every Gauss–Newton step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spikes, self.linearizations, self.thetas = [], [], []

    def simulate(self, batch, batch_idx, steps, seed, trials):
        spikes = super().simulate(batch, batch_idx, steps, seed, trials)
        self.spikes.append(spikes)
        return spikes

    def linearize(self, batch, batch_idx):
        self.thetas.append(self.model.theta.detach().clone())
        self.linearizations.append(super().linearize(batch, batch_idx))
        return self.linearizations[-1]


def test_gauss_newton_step_is_minus_error_over_finite_difference_slope(tmp_path):
    """One scalar parameter, one global target, no damping: the step is -ρ / J with ρ the
    residual of the teacher-forced expected rate's relative error e on the step's spikes
    (log(1 + e) below the target, e above) and J its slope (central differences)."""
    model = BernoulliGLM(**SEED_INTRODUCTION)
    task = Recorder(
        model,
        target_rate_hz=10.0,
        n_trials=3,
        max_trials=3,
        window_steps=300,
        solver=calibration.GaussNewton(damping=0.0),
        figures=False,
    )
    data = NetworkDataModule(
        NormalGenerator(20, 0, 5, glorot=True, seed=2), n_networks=2, batch_size=2
    )
    fit(task, data, tmp_path, max_epochs=1)
    spikes, theta = task.spikes[0], float(task.thetas[0])
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        g = model.input_from_spikes(batch, spikes)[..., model.memory_steps :]

    def residual(threshold: float) -> float:
        error = (torch.sigmoid(g.double() - threshold).mean().item() * 1000 - 10.0) / 10.0
        return math.log1p(error) if error < 0 else error

    assert residual(theta) < -0.1  # the seed model starts below 10 Hz: the logarithm
    slope = (residual(theta + 1e-4) - residual(theta - 1e-4)) / 2e-4
    linear = task.linearizations[0]
    assert linear.residuals.item() == pytest.approx(residual(theta), rel=1e-4)
    assert linear.jacobian.to_dense().item() == pytest.approx(slope, rel=1e-3)
    assert model.theta.item() - theta == pytest.approx(-residual(theta) / slope, rel=1e-3)


def test_two_populations_with_shared_r_and_b(tmp_path):
    """Two scalars, two population targets: a determined 2 × 2 Gauss–Newton system. The
    first half of every network receives random excitatory coupling (its rate depends on r
    and b), the second half none (its rate is b · λ0)."""
    generator = torch.Generator().manual_seed(0)
    for k in range(4):
        weights = torch.rand(50, 50, generator=generator) * 0.4  # [pre, post]
        weights[:, 25:] = 0
        torch.save(weights.fill_diagonal_(0), tmp_path / f"{k}.pt")
    model = RectifiedLNP(lambda_0=1.0, theta=0.0, T=20, tau=5.0, dt=1.0, r=0.01, b=0.01)
    task = RateCalibration(
        model,
        tune=["r", "b"],
        target_rate_hz=None,
        population_rates_hz={"driven": 20.0, "background": 5.0},
        populations={"driven": (0.0, 0.5), "background": (0.5, 1.0)},
        tolerance=0.05,
        figures=False,
    )
    trainer = fit(task, NetworkDataModule(root=str(tmp_path), batch_size=4), tmp_path)
    assert_targets_met(task.summary(), tolerance=0.05)
    assert task.model.b.item() == pytest.approx(0.005, rel=1e-3)  # b alone sets the background
    assert trainer.global_step <= 8


def test_adam_is_still_selectable(tmp_path):
    task = RateCalibration(
        BernoulliGLM(**SEED_INTRODUCTION), solver=calibration.Adam(), figures=False
    )
    fit(task, NetworkDataModule(n_networks=4, batch_size=4), tmp_path, max_epochs=100)
    summary = task.summary()
    assert summary["solver"] == "Adam" and isinstance(task.optimizers().optimizer, torch.optim.Adam)
    assert_targets_met(summary)


class Pooled(BernoulliGLM):
    """Each neuron's expected rate mixes all neurons' thresholds (not local)."""

    def expected_spikes(self, input):
        rates = super().expected_spikes(input)
        return 0.5 * (rates + rates.mean(dim=-1, keepdim=True))


def test_non_local_per_neuron_parameters_are_detected(tmp_path):
    task = RateCalibration(
        Pooled(**SEED_INTRODUCTION),
        tune=["theta"],
        per_neuron=["theta"],
        target_rate_hz=None,
        neuron_rates_hz=[10.0] * 20,
        window_steps=100,
    )
    data = NetworkDataModule(
        NormalGenerator(20, 0, 5, glorot=True, seed=1), n_networks=1, batch_size=1
    )
    with pytest.raises(ValueError, match="reach other neurons' rates.*solver Adam"):
        fit(task, data, tmp_path, max_epochs=1)


@pytest.mark.parametrize(
    "model, name",
    [
        (BernoulliGLM(**SEED_INTRODUCTION), "theta"),
        (BernoulliGLM(**SEED_INTRODUCTION), "rel_ref_strength"),
        (BernoulliGLM(**SEED_INTRODUCTION), "r"),
        (PoissonGLM(**{**PAPER[PoissonGLM], "T": 20}), "b"),
        (RectifiedLNP(**{**PAPER[RectifiedLNP], "T": 20, "b": 0.02}), "lambda_0"),
        (RectifiedSAM(**{**PAPER[RectifiedSAM], "b": 0.02}), "b"),
        (RectifiedSAM(**{**PAPER[RectifiedSAM], "b": 0.02}), "r"),
        (ThresholdSAM(**PAPER[ThresholdSAM]), "b"),
    ],
    ids=[
        "BernoulliGLM-theta",
        "BernoulliGLM-rel_ref_strength",
        "BernoulliGLM-r",
        "PoissonGLM-b",
        "RectifiedLNP-lambda_0",
        "RectifiedSAM-b",
        "RectifiedSAM-r",
        "ThresholdSAM-b",
    ],
)
def test_built_in_per_neuron_parameters_are_local(model, name):
    """Under teacher forcing a neuron's expected rate depends on a per-neuron parameter only
    through its own value (the diagonal block of the Gauss–Newton Jacobian)."""
    task = RateCalibration(
        model,
        tune=[name],
        per_neuron=[name],
        target_rate_hz=None,
        neuron_rates_hz=[10.0] * 20,
        window_steps=50,
        equilibration_steps=10,
    )
    batch = batch_of_networks(n_networks=2, n_neurons=20)
    targets, errors = task.trial_errors(batch, 0, trials=2, draw=0)
    jacobian = task.jacobian([error.mean(dim=0) for error in errors])  # checks locality
    assert task.locality_checked and jacobian.shape == (40, 40)
    assert (jacobian.to_dense().diagonal() != 0).any()


def test_damped_least_squares_matches_a_dense_solve():
    """A per-neuron diagonal, dense rows of global targets and a dense column of a shared
    parameter, as calibration Jacobians have."""
    generator = torch.Generator().manual_seed(0)
    n = 40
    jacobian = torch.zeros(n + 2, n + 1, dtype=torch.float64)
    jacobian[:2] = torch.randn(2, n + 1, generator=generator, dtype=torch.float64)
    jacobian[2:, 1:] = torch.diag(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
    jacobian[2:, 0] = torch.randn(n, generator=generator, dtype=torch.float64)
    residuals = torch.randn(n + 2, generator=generator, dtype=torch.float64)
    scales = torch.rand(n + 1, generator=generator, dtype=torch.float64) + 0.1
    for damping in (1e-3, 0.5):
        dense = torch.linalg.solve(
            jacobian.T @ jacobian + damping * torch.diag(scales**-2), -jacobian.T @ residuals
        )
        step = damped_least_squares(jacobian.to_sparse(), residuals, damping, scales)
        assert torch.allclose(step, dense, atol=1e-8)


def test_more_parameters_than_targets_move_by_their_elasticity():
    """One residual, two parameters: the smallest relative change that corrects it moves
    each parameter in proportion to its elasticity (slope × scale), so a weakly acting one
    barely moves (Marquardt's equal shares would move it by -e / (2 J) each)."""
    jacobian = torch.tensor([[-1.0, 0.05]], dtype=torch.float64)  # e.g. theta and r
    scales = torch.tensor([5.0, 1.0], dtype=torch.float64)
    step = damped_least_squares(jacobian.to_sparse(), torch.tensor([0.4]), 1e-3, scales)
    assert (jacobian @ step).item() == pytest.approx(-0.4, rel=1e-4)
    assert step[1] / step[0] == pytest.approx((0.05 * 1.0**2) / (-1.0 * 5.0**2))


def test_residuals_are_logarithmic_below_the_target_and_linear_above():
    """ρ(e) = log(1 + e) for e < 0, e for e ≥ 0: rows of J and standard errors by 1 + e."""
    jacobian = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64).to_sparse()
    linear = log_below_target(
        Linearization(
            torch.tensor([-0.5, 0.2], dtype=torch.float64), jacobian, torch.tensor([0.01, 0.01])
        )
    )
    assert linear.residuals.tolist() == pytest.approx([math.log(0.5), 0.2])
    assert torch.allclose(
        linear.jacobian.to_dense(), torch.tensor([[4.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    )
    assert linear.variance.tolist() == pytest.approx([0.04, 0.01])


def test_damping_is_relative_to_the_curvature():
    """A parameter that starts near zero (a tiny scale) still takes the full Gauss–Newton
    step: -e / J = -0.1 here, whatever the units."""
    for unit in (1.0, 1e-3):
        parameter = torch.nn.Parameter(torch.tensor(1e-3 * unit))
        optimizer = GaussNewton([parameter], damping=1e-3)
        linear = Linearization(
            torch.tensor([1.0]), torch.tensor([[10.0 / unit]]).to_sparse(), torch.zeros(1)
        )
        optimizer.step(lambda linear=linear: linear)
        assert parameter.item() - 1e-3 * unit == pytest.approx(-0.1 * unit, rel=2e-3)


def test_ddp_two_processes_match_one(tmp_path):
    args = ["--model.validation_steps", "10000", "--trainer.max_epochs", "30", *QUIET]
    results = {}
    for devices in (1, 2):
        root = tmp_path / f"devices{devices}"
        command = [
            sys.executable,
            "-m",
            "spikefit",
            "fit",
            "--trainer.devices",
            str(devices),
            "--trainer.strategy",
            "ddp" if devices == 2 else "auto",
            "--trainer.default_root_dir",
            str(root),
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[devices] = json.loads(next(root.rglob("summary.json")).read_text())
    for summary in results.values():
        assert_targets_met(summary)
    theta = [results[d]["parameters"]["theta"] for d in (1, 2)]
    assert theta[0] == pytest.approx(theta[1], abs=0.05)


def test_resume_from_last_checkpoint(tmp_path):
    first = [
        "--trainer.max_epochs",
        "3",
        "--trainer.check_val_every_n_epoch",
        "3",
        "--model.validation_steps",
        "10000",
    ]
    run_cli(tmp_path, *first)
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert checkpoint["epoch"] == 2
    run_cli(
        tmp_path,
        "--trainer.max_epochs",
        "6",
        "--trainer.check_val_every_n_epoch",
        "3",
        "--model.validation_steps",
        "10000",
        "--ckpt_path",
        "last",
    )
    resumed = max(tmp_path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert torch.load(resumed, weights_only=False)["global_step"] == 6  # 3 + 3, not 6 + 6


def test_per_neuron_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    """An interrupted per-neuron calibration (its last checkpoint after 2 epochs), resumed
    with --ckpt_path last, takes the same steps to the same parameters as one run."""
    config = ["--config", str(CONFIGS / "populations.yaml")]
    whole = run_cli(tmp_path / "whole", *config)
    run_cli(tmp_path / "parts", *config, "--trainer.max_epochs", "2")
    resumed = run_cli(tmp_path / "parts", *config, "--ckpt_path", "last")
    assert whole["steps"] > 2 and resumed["steps"] == whole["steps"]
    assert resumed["converged"] and len(resumed["parameters"]["b"]) == 500
    for name, value in whole["parameters"].items():
        assert resumed["parameters"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_calibration_rejects_bad_arguments():
    with pytest.raises(ValueError, match="population_rates_hz.inhibitory"):
        RateCalibration(
            BernoulliGLM(**SEED_INTRODUCTION), population_rates_hz={"inhibitory": math.nan}
        )
    with pytest.raises(ValueError, match="per_neuron"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), per_neuron=["r"])
    with pytest.raises(ValueError, match="solver: 'lbfgs' is not a calibration solver"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), solver="lbfgs")
    with pytest.raises(ValueError, match="solver: 'spikefit.tasks.solvers.LBFGS' is not a "):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), solver=LBFGS())
    with pytest.raises(InputError, match=r"^GaussNewton\.damping: -1 is out of range"):
        calibration.GaussNewton(damping=-1)
    with pytest.raises(InputError, match=r"^Adam\.lr_decay: 1.5 is out of range"):
        calibration.Adam(lr_decay=1.5)
    with pytest.raises(ValueError, match="precision: 0 is out of range"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), precision=0)


class NaNRates(BernoulliGLM):
    def expected_spikes(self, input):
        return input * math.nan


def test_non_finite_loss_stops_the_run(tmp_path):
    task = RateCalibration(NaNRates(**SEED_INTRODUCTION), window_steps=50, n_trials=1)
    trainer = L.Trainer(
        max_epochs=3,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    with pytest.raises(
        InputError,
        match=r"^RateCalibration\.model: the calibration loss "
        r"became nan at step 0",
    ):
        trainer.fit(task, NetworkDataModule(n_networks=2, batch_size=2))
    assert torch.isfinite(task.model.theta).all()  # no NaN parameters left behind
