"""Cross-validated ridge GLM of a real recording: spikefit against the design a nemos user
builds and fits with scikit-learn, on the identical problem.

The recording is ``neuropixels_100_units.npz`` (100 sorted Neuropixels units, 120 s), binned
at 1 ms; bins holding two spikes of a unit are clipped to one (and counted). The first 3/4
(0–90 s) is the training span, the last 1/4 (90–120 s) is held out and only scored.

Design, the same for every postsynaptic unit: nemos's ``RaisedCosineLogConv`` basis (8
functions, a 100-bin window) convolved causally with every unit's spike counts, its own and
every other unit's, so that the feature at bin t uses bins < t only (nemos's causal
convolution of the counts preceded by 100 silent bins, i.e. the bins before the recording
count as silent, as in spikefit): [N units × 8 features] + intercept. Each unit's spikes are
a Bernoulli (logistic) GLM of it, with a ridge penalty on all filter weights (coupling and
own history), not on the intercept.

- ``sklearn`` (the reference): one ``LogisticRegression`` (lbfgs, L2) per unit; its C chosen
  per unit from the grid by the log-likelihood of the last sixth of the training span (fits
  on the first 5/6, warm-started along the grid, strongest penalty first), then refit on the
  whole training span at the chosen C.
- ``spikefit-identical``: the same design (the nemos functions as a ``Tabulated`` basis,
  checked to give the nemos features to float32 precision), fitted through spikefit's API:
  a Lightning Trainer, ``LikelihoodFit`` with ``L2(self_filter=True)``, the grid mapped to
  spikefit's penalty λ = 1/(2·C·N·T_train) (λ is on the mean negative log-likelihood per
  neuron-bin) and ``cv_folds=6, cv_last_block=True`` (the same validation block).
- ``spikefit-default``: ``configs/fit_recording.yaml`` as it is (spikefit's own bases, a ridge
  on the coupling only with its strength chosen per unit on the same validation block), on
  the same units and bins.

Every solution is scored by one float64 evaluation on its design (the nemos features, or for
``spikefit-default`` its own basis through the same nemos convolution): bits per spike over
the homogeneous baseline (each unit's training-span rate), summed over units, with
spikefit's Bernoulli log-likelihood (a spike predicted below p = 1e-8 costs log 1e-8), so
that it equals what spikefit reports. Times are wall times of the cross-validation and
refit: for spikefit the Trainer's training step, which runs both and computes its traces
(its data set-up, standard errors and scoring are reported apart); building the nemos
features is timed apart. The default C grid (0.001–0.3, half-decades) brackets the
validated optimum of this recording (C ≈ 0.003–0.03 for 14 sampled units of the 100);
scikit-learn runs at tol 1e-6, since its default 1e-4 stops hundreds of nats short of the
optimum and changes the chosen C of a third of the units.

Run: python experiments/bench_real_recording.py [--units 100] [--train-s 90]
[--solver newton-cg|lbfgs] [--grid C1,C2,...] [--threads 1] [--skip-reference]
[--skip-default] [--check] [--json results.json]. The full run (100 units, 90 s) takes about
an hour on one thread, mostly scikit-learn; try ``--units 10 --train-s 30`` first.
scikit-learn and nemos are not spikefit dependencies: pip install -e ".[bench]" (or
scikit-learn nemos).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

import spikefit.tasks
from spikefit.data import SpikeTrainDataModule
from spikefit.models import FilterGLM
from spikefit.models.bases import Tabulated
from spikefit.tasks import L2, LikelihoodFit

DATA = "/work/shared/data/neuropixels_100_units.npz"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fit_recording.yaml"
WINDOW, N_BASIS, DT_MS = 100, 8, 1.0
HELDOUT_FRACTION, CV_FOLDS = 0.25, 6
#: C of scikit-learn (penalty ||w||²/(2C) on the total log-loss), log-spaced.
DEFAULT_GRID = "0.001,0.003,0.01,0.03,0.1,0.3"
#: scikit-learn's default tolerance (1e-4 on the gradient of the mean log-loss) stops short
#: of the optimum by more than the bits/spike that are compared (30 units: 268 nats, 0.012
#: bits/spike, 10 of 30 choices of C); 1e-6 is within 0.01 nats and 1e-4 bits/spike.
SKLEARN_TOL = 1e-6
#: Bins of the check that spikefit's traces equal the nemos features.
CHECK_BINS = 20_000
TARGET_GAP, TARGET_RATIO = 0.005, 20.0
#: spikefit's Bernoulli floor of the hazard at a spike (Emission.floor).
FLOOR = 1e-8


@dataclass
class Problem:
    """The binned recording, its split and the nemos design."""

    counts: np.ndarray  # [T, N] 0/1 (float64), clipped
    unit_ids: list[int]
    clipped: int  # bins that held more than one spike of a unit
    n_train: int  # training bins (the first ones)
    split: int  # first bin of the cross-validation's validation block
    kernel: np.ndarray  # nemos basis [window, K], row τ: the bin τ + 1 before
    X: np.ndarray | None = None  # [T, N·K] float64 features, column j·K + k
    feature_s: float = 0.0

    @property
    def n_units(self) -> int:
        return self.counts.shape[1]

    @property
    def rates(self) -> np.ndarray:
        """[N] spikes per bin on the training span: the homogeneous baseline."""
        return self.counts[: self.n_train].mean(0)


@dataclass
class Result:
    """A tool's solution on the nemos columns and what it took."""

    weights: np.ndarray  # [N·K, N], row j·K + k: presynaptic unit j, basis function k
    bias: np.ndarray  # [N]
    seconds: float  # cross-validation and refit
    chosen_C: np.ndarray | None = None  # [N]
    kernel: np.ndarray | None = None  # [window, K] of its design, None: the nemos one
    notes: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- data and design
def bin_counts(path: str, n_units: int, t_stop_s: float) -> tuple[np.ndarray, list[int]]:
    """Spike counts [T, N] of the first ``n_units`` unit ids in 1 ms bins [k·dt, (k+1)·dt)
    over 0 … ``t_stop_s``."""
    with np.load(path) as archive:
        times, clusters = archive["spike_times"], archive["spike_clusters"]
    ids = np.unique(clusters)[:n_units]
    n_bins = round(t_stop_s * 1000 / DT_MS)
    bins = np.floor(times * 1000 / DT_MS).astype(np.int64)
    keep = np.isin(clusters, ids) & (bins < n_bins)
    rows = np.searchsorted(ids, clusters[keep])
    counts = np.zeros((n_bins, len(ids)))
    np.add.at(counts, (bins[keep], rows), 1)
    return counts, ids.tolist()


def nemos_basis():
    """The nemos basis of the design."""
    import nemos as nmo

    return nmo.basis.RaisedCosineLogConv(N_BASIS, window_size=WINDOW)


def nemos_features(counts: np.ndarray, basis) -> np.ndarray:
    """The basis's causal features [T, N·K] (float64) of ``counts`` [T, N]: nemos's
    convolution of the counts preceded by a window of silent bins (its first window of
    features, NaN otherwise, then sees a silent past)."""
    padded = np.vstack([np.zeros((WINDOW, counts.shape[1])), counts])
    return np.asarray(basis.compute_features(padded))[WINDOW:]


def kernel_features(counts: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """As :func:`nemos_features` for any kernel [window, K] (row τ: lag τ), by nemos's
    convolution (the one its basis runs)."""
    from nemos.convolve import create_convolutional_predictor

    window = len(kernel)
    padded = np.vstack([np.zeros((window, counts.shape[1])), counts])
    features = np.asarray(create_convolutional_predictor(kernel, padded))[window:]
    return features.reshape(len(counts), -1)


def check_lag_convention(basis) -> str:
    """Checks on a toy train that nemos's feature k at bin t is Σ_τ kernel[τ, k]·x(t−1−τ),
    i.e. kernel row τ is spikefit's lag τ; returns the convention as a sentence."""
    spike, length = 7, 2 * WINDOW
    toy = np.zeros((length, 2))
    toy[spike, 1] = 1.0
    features = nemos_features(toy, basis)
    kernel = np.asarray(basis.kernel_)
    expected = np.zeros((length, N_BASIS))
    expected[spike + 1 : spike + 1 + WINDOW] = kernel
    assert np.allclose(features[:, N_BASIS:], expected, atol=1e-12), "nemos lag convention"
    assert not features[:, :N_BASIS].any(), "nemos column order (unit-major)"
    return (
        "nemos feature column j·K + k at bin t = Σ_τ kernel_[τ, k]·x_j(t−1−τ): kernel row τ "
        "is spikefit's lag τ (row 0: the bin right before), so Tabulated(kernel_.T)"
    )


def load_problem(args: argparse.Namespace) -> Problem:
    """Bins the recording, clips it and builds the nemos design."""
    counts, ids = bin_counts(args.data, args.units, args.train_s / (1 - HELDOUT_FRACTION))
    clipped = int((counts > 1).sum())
    counts = np.minimum(counts, 1.0)
    n_train = round(len(counts) * (1 - HELDOUT_FRACTION))
    split = round((CV_FOLDS - 1) * n_train / CV_FOLDS)  # spikefit's contiguous_folds edge
    basis = nemos_basis()
    problem = Problem(counts, ids, clipped, n_train, split, kernel=None)
    started = time.perf_counter()
    problem.X = nemos_features(counts, basis)
    problem.feature_s = time.perf_counter() - started
    problem.kernel = np.asarray(basis.kernel_, dtype=np.float64)
    return problem


def tabulated_basis(problem: Problem):
    """The nemos functions as a spikefit basis [K, window] in lag order."""
    return Tabulated(torch.from_numpy(np.ascontiguousarray(problem.kernel.T)))


def check_traces(problem: Problem, bins: int = CHECK_BINS) -> float:
    """The largest difference between spikefit's traces (coupling and own, on the
    Tabulated basis) and the nemos features over the first ``bins`` bins; asserts that
    they agree to float32 precision."""
    basis = tabulated_basis(problem)
    model = FilterGLM(emission="bernoulli", dt=DT_MS, coupling_basis=basis, self_basis=basis)
    spikes = torch.from_numpy(problem.counts[:bins].T.copy()).unsqueeze(0)
    n = problem.n_units
    expected = problem.X[:bins]
    worst = 0.0
    for trace in model.spike_traces(spikes):  # rows k·N + j → columns j·K + k
        ours = trace[0].double().numpy().reshape(N_BASIS, n, -1).transpose(2, 1, 0)
        gap = np.abs(ours.reshape(len(expected), -1) - expected)
        assert np.all(gap <= 1e-5 + 1e-5 * np.abs(expected)), "spikefit traces ≠ nemos features"
        worst = max(worst, float(gap.max()))
    return worst


# ---------------------------------------------------------------------- scoring
def bernoulli_ll(y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Log-likelihood of 0/1 ``y`` under p = σ(u), elementwise (float64), as spikefit's
    Bernoulli emission takes it: the hazard h = log(1 + e^u) at a spike at least its floor
    (1e-8), so that a spike predicted at p < 1e-8 costs log(1e-8)."""
    hazard = np.logaddexp(0.0, u)
    at_spike = np.log(-np.expm1(-np.maximum(hazard, FLOOR)))
    return np.where(y > 0, at_spike, -hazard)


def design(problem: Problem, result: Result) -> np.ndarray:
    """The features [T, N·K] of the result's basis: the nemos design, or its own."""
    if result.kernel is None:
        return problem.X
    return kernel_features(problem.counts, result.kernel)


def bits_per_spike(problem: Problem, u: np.ndarray, rows: slice) -> float:
    """Bits per spike over the homogeneous baseline (each unit's training-span rate) of the
    inputs ``u`` [T, N] in the bins ``rows``, summed over units (spikefit's definition)."""
    y = problem.counts[rows]
    rates = problem.rates
    baseline = y * np.log(rates) + (1 - y) * np.log1p(-rates)
    return float((bernoulli_ll(y, u[rows]).sum() - baseline.sum()) / (y.sum() * math.log(2)))


def penalized_objective(problem: Problem, result: Result, C: np.ndarray) -> np.ndarray:
    """Each unit's training objective at penalties C [N] (scikit-learn's: the total negative
    log-likelihood plus ‖w‖²/(2C)), nats [N], on the nemos design."""
    rows = slice(0, problem.n_train)
    u = problem.X[rows] @ result.weights + result.bias
    nll = -bernoulli_ll(problem.counts[rows], u).sum(0)
    return nll + (result.weights**2).sum(0) / (2 * C)


# ---------------------------------------------------------------------- the reference
def fit_reference(problem: Problem, grid: list[float], tol: float) -> Result:
    """scikit-learn per unit: C by the last sixth of the training span, then the refit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X, split, n_train, n = problem.X, problem.split, problem.n_train, problem.n_units
    grid = sorted(grid)  # strongest penalty first (ties go to it, as in spikefit)
    weights, bias, chosen = np.zeros((X.shape[1], n)), np.zeros(n), np.zeros(n)
    curves = np.zeros((n, len(grid)))  # validation log-likelihood (nats) per unit and C
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for i in range(n):
            y = problem.counts[:n_train, i]
            fit = LogisticRegression(C=grid[0], tol=tol, max_iter=10_000, warm_start=True)
            scores, solutions = [], []
            for C in grid:
                fit.set_params(C=C).fit(X[:split], y[:split])
                u = X[split:n_train] @ fit.coef_[0] + fit.intercept_[0]
                scores.append(bernoulli_ll(y[split:], u).sum())
                solutions.append((fit.coef_.copy(), fit.intercept_.copy()))
            curves[i] = scores
            best = int(np.argmax(scores))
            fit.set_params(C=grid[best])
            fit.coef_, fit.intercept_ = solutions[best]
            fit.fit(X[:n_train], y)
            weights[:, i], bias[i], chosen[i] = fit.coef_[0], fit.intercept_[0], grid[best]
        unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    seconds = time.perf_counter() - started
    notes = {"unconverged_fits": unconverged, "cv_curves": curves}
    return Result(weights, bias, seconds, chosen, notes=notes)


# ---------------------------------------------------------------------- spikefit
class StepTimer(L.Callback):
    """Sums the wall time of the training steps (a likelihood fit's cross-validation and
    refit run in them)."""

    def __init__(self) -> None:
        self.seconds, self.started = 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self.started


def quiet_trainer(root: str, timer: StepTimer, **options) -> L.Trainer:
    """A Lightning Trainer without logger, checkpoints, progress bar or sanity validation."""
    defaults = dict(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=[timer],
    )
    return L.Trainer(**(defaults | options))


def data_options(problem: Problem, args: argparse.Namespace) -> dict:
    """SpikeTrainDataModule arguments for the same units and bins."""
    return dict(
        path=args.data,
        unit_ids=problem.unit_ids,
        t_start_s=0.0,
        t_stop_s=len(problem.counts) * DT_MS / 1000,
    )


def check_data(data, problem: Problem) -> None:
    """Asserts that spikefit's data module holds the same clipped counts and split."""
    assert data.n_train_bins == problem.n_train, "training bins"
    assert data.clipped_bins == problem.clipped, "clipped bins"
    assert np.array_equal(data.spikes.numpy().T, problem.counts), "binned counts"


def make_solver(name: str):
    """NewtonCG (where spikefit has it) or LBFGS(max_iter=400)."""
    tasks = spikefit.tasks
    if name == "newton-cg" and hasattr(tasks, "NewtonCG"):
        return tasks.NewtonCG()
    if name == "newton-cg":
        print("spikefit.tasks.NewtonCG is not there yet: LBFGS(max_iter=400) instead")
    return tasks.LBFGS(max_iter=400)


def on_columns(task: LikelihoodFit, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted FilterGLM's weights [N·K, N] on the design's columns j·K + k (coupling
    j ≠ i from the fit's [E, K] weights on its edges, scaled by r; own history from its self
    weights) and its biases [N]."""
    pre, post = task.edge_index.cpu().numpy()
    n_basis = task.n_basis
    weights = np.zeros((n, n_basis, n))
    weights[pre, :, post] = task.coupling_weights.detach().double().cpu().numpy()
    weights *= float(task.model.r)
    own = task.model.self_weights.detach().double().cpu().numpy()
    own = np.broadcast_to(own, (n, n_basis))
    for i in range(n):
        weights[i, :, i] = own[i]
    bias = np.broadcast_to(task.model.b.detach().double().cpu().numpy(), (n,))
    return weights.reshape(n * n_basis, n), bias.copy()


def own_kernel(task: LikelihoodFit) -> np.ndarray:
    """The fitted FilterGLM's basis [window, K] in float64 (coupling and self the same)."""
    coupling, own = task.model.bases
    assert coupling is own or repr(coupling) == repr(own), "one basis for both filters"
    lag = torch.arange(coupling.window_steps, dtype=torch.float64)
    return coupling.evaluate(lag).t().numpy()


def run_fit(task: LikelihoodFit, data, problem: Problem, **trainer_options) -> Result:
    """Fits ``task`` on ``data`` under a quiet Trainer; the result on its design's columns,
    with the C = 1/(2·λ·N·T_train) each unit chose where it cross-validated."""
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as root:
        trainer = quiet_trainer(root, timer, **trainer_options)
        started = time.perf_counter()
        trainer.fit(task, data)
        whole = time.perf_counter() - started
    check_data(data, problem)
    weights, bias = on_columns(task, problem.n_units)
    notes = {
        "solver": type(task.solver).__name__,
        "whole_fit_s": whole,
        "converged": task.converged,
        "own_bits_per_spike": task.results.get("bits_per_spike", {}),
        "penalized": "all filter weights" if task.penalizes_self_filter else "coupling only",
        "strength": None if task.regularizer is None else task.regularizer.strength,
    }
    result = Result(weights, bias, timer.seconds, notes=notes)
    cv = task.results.get("cross_validation")
    if cv is not None:
        assert cv["folds"] == [[problem.split, problem.n_train]], f"validation {cv['folds']}"
        scale = 2 * problem.n_units * problem.n_train
        result.chosen_C = 1 / (scale * np.asarray(cv["chosen_strength"]))
        validation = problem.n_train - problem.split
        # its grid runs from the strongest λ: C ascending, as the reference's
        notes["cv_curves"] = np.asarray(cv["unit_curves"]) * validation
    return result


def fit_identical(problem: Problem, args: argparse.Namespace, grid: list[float]) -> Result:
    """spikefit on the nemos design, λ = 1/(2·C·N·T_train) for every C of the grid."""
    scale = 2 * problem.n_units * problem.n_train
    strengths = [1 / (scale * C) for C in grid]
    basis = tabulated_basis(problem)
    model = FilterGLM(
        emission="bernoulli", dt=DT_MS, coupling_basis=basis, self_basis=basis, n_basis=N_BASIS
    )
    task = LikelihoodFit(
        model,
        per_neuron=["b", "self_weights"],
        coupling="dense",
        solver=make_solver(args.solver),
        regularizer=L2(strength=strengths[0], self_filter=True),
        penalty_grid=strengths,
        cv_folds=CV_FOLDS,
        cv_last_block=True,
        check_steps=0,
    )
    data = SpikeTrainDataModule(
        dt_ms=DT_MS,
        heldout_fraction=HELDOUT_FRACTION,
        clip_counts=1,
        **data_options(problem, args),
    )
    return run_fit(task, data, problem)


def build(node):
    """Instantiates a Lightning CLI config node (``class_path`` and ``init_args``)."""
    if isinstance(node, dict) and "class_path" in node:
        module, name = node["class_path"].rsplit(".", 1)
        owner = getattr(importlib.import_module(module), name)
        return owner(**{key: build(value) for key, value in node.get("init_args", {}).items()})
    if isinstance(node, dict):
        return {key: build(value) for key, value in node.items()}
    if isinstance(node, list):
        return [build(value) for value in node]
    return node


def fit_default(problem: Problem, args: argparse.Namespace) -> Result:
    """``configs/fit_recording.yaml`` as it is, on the same units and bins."""
    config = yaml.safe_load(CONFIG.read_text())
    L.seed_everything(config.get("seed_everything", 0), verbose=False)
    config["data"].setdefault("init_args", {}).update(data_options(problem, args))
    task, data = build(config["model"]), build(config["data"])
    result = run_fit(task, data, problem, **config.get("trainer", {}))
    result.kernel = own_kernel(task)
    return result


# ---------------------------------------------------------------------- report
def distribution(result: Result, scale: float) -> str:
    """How many units chose each C (and its λ), and what the penalty covers."""
    covers = result.notes.get("penalized", "all filter weights")
    if result.chosen_C is None:
        strength = result.notes.get("strength") or math.nan
        return f"no CV: λ={strength:g} (C={1 / (scale * strength):.3g}), {covers}"
    values, counts = np.unique(result.chosen_C, return_counts=True)
    parts = [
        f"C={C:.3g} (λ={1 / (scale * C):.3g}): {count}"
        for C, count in zip(values, counts, strict=True)
    ]
    return ", ".join(parts) + ("" if covers == "all filter weights" else f"; {covers}")


def score(problem: Problem, result: Result) -> dict:
    """A result's held-out and train bits/spike (float64, on its own design) and times."""
    u = design(problem, result) @ result.weights + result.bias
    floored = (np.logaddexp(0.0, u) < FLOOR) & (problem.counts > 0)
    return {
        "floored_spikes": {
            "train": int(floored[: problem.n_train].sum()),
            "heldout": int(floored[problem.n_train :].sum()),
        },
        "heldout_bits_per_spike": bits_per_spike(problem, u, slice(problem.n_train, None)),
        "train_bits_per_spike": bits_per_spike(problem, u, slice(0, problem.n_train)),
        "seconds": result.seconds,
        "chosen_C": None if result.chosen_C is None else result.chosen_C.tolist(),
        **result.notes,
    }


def print_table(problem: Problem, rows: dict, results: dict[str, Result], grid: list[float]):
    """The table, and what each spikefit fit reported itself."""
    scale = 2 * problem.n_units * problem.n_train
    print(
        f"\n{'tool':20s} {'held-out b/s':>12s} {'train b/s':>10s} {'CV+refit s':>11s} "
        f"{'ratio':>7s}  chosen C (λ): units"
    )
    for tool, row in rows.items():
        ratio = "" if row["ratio"] is None else f"{row['ratio']:6.1f}×"
        print(
            f"{tool:20s} {row['heldout_bits_per_spike']:12.4f} "
            f"{row['train_bits_per_spike']:10.4f} {row['seconds']:11.1f} {ratio:>7s}  "
            f"{distribution(results[tool], scale)}"
        )
    for tool, row in rows.items():
        floored = row["floored_spikes"]
        if floored["train"] or floored["heldout"]:
            print(
                f"{tool}: {floored['train']} training and {floored['heldout']} held-out spikes "
                f"predicted at p < {FLOOR:g}, each scored log({FLOOR:g}) as spikefit does"
            )
        if "own_bits_per_spike" in row:
            own = row["own_bits_per_spike"]
            print(
                f"{tool}: {row['solver']}, whole Trainer.fit {row['whole_fit_s']:.1f} s "
                f"(with data set-up, standard errors, scoring), converged {row['converged']}; "
                f"its own held-out {own.get('heldout', math.nan):.4f}, train "
                f"{own.get('train', math.nan):.4f} bits/spike"
            )


def compare(problem: Problem, rows: dict, results: dict[str, Result], grid: list[float]) -> dict:
    """spikefit-identical against the reference: the held-out gap, the same choices, the
    penalized training objective at the reference's C, the speed ratio."""
    ours, reference = results["spikefit-identical"], results["sklearn"]
    gap = abs(
        rows["spikefit-identical"]["heldout_bits_per_spike"]
        - rows["sklearn"]["heldout_bits_per_spike"]
    )
    same = np.isclose(ours.chosen_C, reference.chosen_C)
    excess = penalized_objective(problem, ours, reference.chosen_C) - penalized_objective(
        problem, reference, reference.chosen_C
    )
    ratio = rows["spikefit-identical"]["ratio"]
    grid = np.sort(grid)
    for i in np.flatnonzero(~same):
        a, b = (int(np.argmin(np.abs(np.log(grid / r.chosen_C[i])))) for r in (reference, ours))
        print(
            f"unit {problem.unit_ids[i]}: sklearn chose C={grid[a]:g}, spikefit C={grid[b]:g}; "
            f"validation log-likelihood of the other choice: sklearn "
            f"{reference.notes['cv_curves'][i, b] - reference.notes['cv_curves'][i, a]:+.2e}, "
            f"spikefit {ours.notes['cv_curves'][i, a] - ours.notes['cv_curves'][i, b]:+.2e} nats"
        )
    print(
        f"|Δ held-out bits/spike| spikefit-identical vs sklearn: {gap:.5f} (target ≤ "
        f"{TARGET_GAP}: {'met' if gap <= TARGET_GAP else 'NOT met'}); same C chosen for "
        f"{int(same.sum())} of {problem.n_units} units"
    )
    print(
        f"penalized training objective at sklearn's C, spikefit − sklearn (nats per unit): "
        f"sum {excess[same].sum():+.2e}, range {excess[same].min():+.2e} … "
        f"{excess[same].max():+.2e} over the units with the same C"
    )
    print(
        f"spikefit-identical is {ratio:.1f}× faster than sklearn (target ≥ {TARGET_RATIO:g}×: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    return {"gap": gap, "same_C": int(same.sum()), "objective_excess": excess.tolist()}


def report(problem: Problem, results: dict[str, Result], grid: list[float]) -> dict:
    """Prints the table and the targets; returns them as a dict."""
    reference = results.get("sklearn")
    rows = {tool: score(problem, result) for tool, result in results.items()}
    for row in rows.values():
        row["ratio"] = None if reference is None else reference.seconds / row["seconds"]
    print_table(problem, rows, results, grid)
    if reference is not None:
        print(f"sklearn: {reference.notes['unconverged_fits']} fits stopped unconverged")
    if reference is not None and "spikefit-identical" in rows:
        rows["comparison"] = compare(problem, rows, results, grid)
    if reference is not None and "spikefit-default" in rows:
        better = (
            rows["spikefit-default"]["heldout_bits_per_spike"]
            > rows["sklearn"]["heldout_bits_per_spike"]
        )
        print(f"spikefit-default scores above sklearn held out: {'yes' if better else 'NO'}")
    return rows


def set_threads(threads: int) -> None:
    """One thread count for XLA (nemos), BLAS (scikit-learn) and torch (spikefit); XLA's
    must be set before jax is imported."""
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={str(threads > 1).lower()}"
        + f" intra_op_parallelism_threads={threads}"
    )
    import jax
    from threadpoolctl import threadpool_limits

    jax.config.update("jax_enable_x64", True)
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--units", type=int, default=100, help="the first N unit ids")
    parser.add_argument("--train-s", type=float, default=90.0, help="training span (s)")
    parser.add_argument("--grid", default=DEFAULT_GRID, help="scikit-learn's C, comma-separated")
    parser.add_argument("--solver", choices=["newton-cg", "lbfgs"], default="newton-cg")
    parser.add_argument("--sklearn-tol", type=float, default=SKLEARN_TOL)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--check", action="store_true", help="only check the design")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    grid = [float(value) for value in args.grid.split(",")]
    set_threads(args.threads)

    convention = check_lag_convention(nemos_basis())
    problem = load_problem(args)
    spikes = int(problem.counts.sum())
    print(
        f"{args.data}: {problem.n_units} units × {len(problem.counts):,} bins of {DT_MS:g} ms, "
        f"{spikes:,} spikes ({problem.clipped} bins clipped to one), rates "
        f"{problem.rates.min() * 1000:.2f}–{problem.rates.max() * 1000:.2f} Hz; training "
        f"bins 0–{problem.n_train:,} (validation block {problem.split:,}–{problem.n_train:,}), "
        f"held out {problem.n_train:,}–{len(problem.counts):,}; {args.threads} thread(s)"
    )
    print(
        f"{convention}\nnemos features [{problem.X.shape[0]:,} × {problem.X.shape[1]}] + "
        f"intercept built in {problem.feature_s:.1f} s"
    )
    worst = check_traces(problem)
    print(f"spikefit traces = nemos features over {CHECK_BINS:,} bins (largest gap {worst:.1e})")
    if args.check:
        return
    fitters = {
        "sklearn": lambda: fit_reference(problem, grid, args.sklearn_tol),
        "spikefit-identical": lambda: fit_identical(problem, args, grid),
        "spikefit-default": lambda: fit_default(problem, args),
    }
    if args.skip_reference:
        del fitters["sklearn"]
    if args.skip_default:
        del fitters["spikefit-default"]
    results = {tool: fit() for tool, fit in fitters.items()}
    rows = report(problem, results, grid)
    if args.json:
        meta = {"units": problem.n_units, "n_train": problem.n_train, "grid_C": grid}
        meta["feature_s"] = problem.feature_s
        Path(args.json).write_text(
            json.dumps({"setup": meta, "results": rows}, indent=1, default=np.ndarray.tolist)
        )


if __name__ == "__main__":
    main()
