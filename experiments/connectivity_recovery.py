"""Connectivity inference against recording length: edge-detection AUROC and connection calls
of ridge fits with their penalty chosen by cross-validation, of the exact maximum-likelihood
fit and of a cross-correlation baseline, over repeated networks.

Every repeat s generates a glorot normal network of ``--neurons`` neurons (std 5, seed s) and
simulates the seed introduction's BernoulliGLM on it once for the longest length (seed s + 1);
every shorter recording of T steps is its beginning. On each recording:

- **MLE**: spikefit's Newton fit of all N(N-1) couplings, a threshold and a refractory scale
  per neuron, no penalty;
- **ridge CV/unit**: the same fit with ``L2`` on the couplings, its strength λ = τ / (2 N T)
  (nats per neuron-bin; τ a prior precision per weight², from :data:`PRIOR_PRECISIONS`)
  chosen per postsynaptic unit by ``LikelihoodFit(penalty_grid=…, cv_folds=--folds,
  cv_last_block=True)``: fitted on the first ``folds - 1`` contiguous time blocks, scored
  on the last, then refitted on all bins;
- **ridge CV**: one λ for all units, the grid strength with the best mean CV log-likelihood
  over units of that same cross-validation, refitted on all bins;
- **xcorr**: the Pearson correlation r of j's coupling-filtered spikes (the model's
  presynaptic trace) with i's spikes, the kernel-weighted cross-correlogram at positive lags.

Scores: the AUROC of |W| (|r|) for the true edges over all off-diagonal pairs. Calls at FDR
``--q``: the fits' Wald tests with Benjamini–Hochberg (``LikelihoodFit(fdr=q)``); xcorr's
z = r / σ₀ against a circular-shift null (σ₀ the spread of each pair's r over :data:`SHIFTS`
shifts of the postsynaptic trains, which keep every train's autocorrelation), two-sided
normal p-values, Benjamini–Hochberg at the same q, excitatory or inhibitory by the sign of r.
Reported per method, mean±sd over repeats: the false-call rate (calls among the truly absent
pairs), the false discovery proportion FDP (absent pairs among the calls, which BH bounds by
q in expectation) and the true-call rate (true edges called with their sign). The scores of
every repeat go to ``--out`` with the suffix ``.json``.

Run: python experiments/connectivity_recovery.py [--max-steps 300000] [--seeds 3]
[--folds 5] [--q 0.05] [--out connectivity_recovery.png]. The default stops at 300,000
steps (10 min for 3 repeats on 2 cores shared with other jobs); ``--max-steps 1000000`` adds
the longest length (35 min). Quick (a minute or two): --max-steps 30000 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import matplotlib
import torch
from torchmetrics.functional.classification import binary_auroc
from typing_extensions import override

from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import NormalGenerator, graph_to_dense
from spikefit.models import BernoulliGLM
from spikefit.tasks import LikelihoodFit, Newton
from spikefit.tasks.calibration import SEED_INTRODUCTION
from spikefit.tasks.likelihood.uncertainty import benjamini_hochberg
from spikefit.tasks.regularizers import L2

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LENGTHS = (10_000, 30_000, 100_000, 300_000, 1_000_000)
#: Prior precisions τ (1 / weight²) of the cross-validated ridge: λ = τ / (2 N T).
PRIOR_PRECISIONS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Circular shifts of the cross-correlation null.
SHIFTS = 50
METHODS = ("ridge CV", "ridge CV/unit", "MLE", "xcorr")
#: What :func:`scores` returns, in order.
SCORES = ("AUROC", "false-call rate", "FDP", "true-call rate")


class Fit(LikelihoodFit):
    """A likelihood fit that writes no run files (figures, summary, fitted model)."""

    @override
    def configure_callbacks(self) -> list[L.Callback]:
        return []


def fitted(spikes: torch.Tensor, q: float, **penalty: object) -> Fit:
    """The Newton fit of the coupling (threshold and refractory scale per neuron, calls at FDR
    ``q``) with the ``penalty`` arguments of :class:`LikelihoodFit` (none: the MLE)."""
    task = Fit(
        BernoulliGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        refractory_scale=True,
        coupling="dense",
        solver=Newton(),
        fdr=q,
        check_steps=0,
        **penalty,
    )
    data = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0, chunk_bins=100_000)
    with tempfile.TemporaryDirectory() as log_dir:
        L.Trainer(
            max_epochs=20,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=log_dir,
        ).fit(task, data)
    return task


def cross_validated_ridge(spikes: torch.Tensor, q: float, folds: int) -> Fit:
    """The ridge fit with a strength λ = τ / (2 N T) per postsynaptic unit, τ from
    :data:`PRIOR_PRECISIONS` chosen on the last of ``folds`` time blocks."""
    n, steps = spikes.shape
    return fitted(
        spikes,
        q,
        regularizer=L2(0.0),
        penalty_grid=[tau / (2 * n * steps) for tau in PRIOR_PRECISIONS],
        cv_folds=folds,
        cv_last_block=True,
    )


def shared_strength(task: Fit) -> float:
    """The strength λ of the cross-validated ``task``'s grid with the best mean CV
    log-likelihood over units (nats per neuron-bin)."""
    curve = task.results["cross_validation"]
    return curve["grid"][max(range(len(curve["grid"])), key=curve["mean_curve"].__getitem__)]


def fit_result(task: Fit) -> tuple[torch.Tensor, torch.Tensor]:
    """The fitted coupling [N, N] and its calls [N, N] (±1, 0), both indexed [pre, post]."""
    return task.coupling_matrix().detach(), task.connections.matrix(task.n_neurons).nan_to_num(0)


def cross_correlation(
    spikes: torch.Tensor, q: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The correlation [N, N] of presynaptic traces (rows, pre) with spikes (columns, post),
    and its calls at FDR ``q`` against the circular-shift null."""
    trace = BernoulliGLM(**SEED_INTRODUCTION).presynaptic_trace(spikes.unsqueeze(0).float())[0]
    pre = trace - trace.mean(1, keepdim=True)
    pre = pre / pre.norm(dim=1, keepdim=True).clamp(min=1e-12)
    post = spikes.float() - spikes.float().mean(1, keepdim=True)
    post = post / post.norm(dim=1, keepdim=True).clamp(min=1e-12)
    steps = spikes.shape[1]
    shifts = torch.randint(steps // 10, steps - steps // 10, (SHIFTS,), generator=generator)
    null = torch.stack([pre @ post.roll(int(shift), 1).t() for shift in shifts])
    correlation = pre @ post.t()
    z = correlation / null.std(0).clamp(min=1e-12)
    p = torch.special.erfc(z.abs() / math.sqrt(2)).double()
    off = ~torch.eye(len(spikes), dtype=torch.bool)
    calls = torch.zeros_like(correlation)
    calls[off] = torch.where(benjamini_hochberg(p[off]) <= q, correlation[off].sign(), 0)
    return correlation, calls


def scores(weights: torch.Tensor, calls: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """AUROC of |weights| for the true edges, false-call rate (called absent pairs / absent
    pairs), false discovery proportion (called absent pairs / calls) and true-call rate (true
    edges called with their sign / true edges), over the off-diagonal pairs."""
    off = ~torch.eye(len(truth), dtype=torch.bool)
    weights, calls, truth = weights[off], calls[off], truth[off]
    absent, called = truth == 0, calls != 0
    false_calls = int((called & absent).sum())
    return [
        float(binary_auroc(weights.abs(), (~absent).long())),
        false_calls / max(int(absent.sum()), 1),
        false_calls / max(int(called.sum()), 1),
        float((calls == truth.sign())[~absent].float().mean()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=300_000, help="longest length")
    parser.add_argument("--neurons", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="repeats (networks 0 … seeds-1)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the penalty's CV")
    parser.add_argument("--q", type=float, default=0.05, help="false discovery rate of calls")
    parser.add_argument("--out", default="connectivity_recovery.png")
    args = parser.parse_args()
    lengths = [n for n in LENGTHS if n <= args.max_steps] or [args.max_steps]

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    started = time.perf_counter()
    # results[method][length]: the SCORES of every repeat
    results = {method: {steps: [] for steps in lengths} for method in METHODS}
    seconds = dict.fromkeys(("MLE fit", "ridge CV fit", "shared refit", "xcorr"), 0.0)
    for seed in range(args.seeds):
        generator = NormalGenerator(args.neurons, mean=0, std=5, glorot=True, seed=seed)
        network = generator.generate(1)[0]
        truth = graph_to_dense(network)
        spikes = BernoulliGLM(**SEED_INTRODUCTION).simulate(
            network, lengths[-1], seed=seed + 1, verbose=False
        )
        print(
            f"repeat {seed}: {int((truth != 0).sum())} edges of "
            f"{args.neurons * (args.neurons - 1)} pairs, {spikes.float().mean() * 1000:.2f} Hz"
        )
        shifts = torch.Generator().manual_seed(seed)
        for steps in lengths:
            part = spikes[:, :steps]
            clock = time.perf_counter()
            found = {"MLE": fit_result(fitted(part, args.q))}
            seconds["MLE fit"] += time.perf_counter() - clock
            clock = time.perf_counter()
            per_unit = cross_validated_ridge(part, args.q, args.folds)
            found["ridge CV/unit"] = fit_result(per_unit)
            seconds["ridge CV fit"] += time.perf_counter() - clock
            clock = time.perf_counter()
            found["ridge CV"] = fit_result(
                fitted(part, args.q, regularizer=L2(shared_strength(per_unit)))
            )
            seconds["shared refit"] += time.perf_counter() - clock
            clock = time.perf_counter()
            found["xcorr"] = cross_correlation(part, args.q, shifts)
            seconds["xcorr"] += time.perf_counter() - clock
            for method in METHODS:
                results[method][steps].append(scores(*found[method], truth))
            print(
                f"  {steps:8d} steps, AUROC: "
                + ", ".join(f"{m} {results[m][steps][-1][0]:.4f}" for m in METHODS),
                flush=True,
            )

    summary = {
        method: {steps: torch.tensor(rows).double() for steps, rows in by_length.items()}
        for method, by_length in results.items()
    }
    print_table(summary, lengths, args)
    print(
        "time (s): "
        + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items())
        + f"; total {time.perf_counter() - started:.0f}"
    )
    plot(summary, lengths, args)
    scores_path = Path(args.out).with_suffix(".json")
    scores_path.write_text(json.dumps({"columns": SCORES, "per_repeat": results}, indent=1))
    print(f"plot: {args.out}, scores per repeat: {scores_path}")


def spread(values: torch.Tensor, digits: int = 3) -> str:
    """``mean±sd`` of ``values`` over repeats."""
    sd = float(values.std()) if len(values) > 1 else 0.0
    return f"{float(values.mean()):.{digits}f}±{sd:.{digits}f}"


def print_table(summary: dict, lengths: list[int], args: argparse.Namespace) -> None:
    """The AUROC and call rates of every method and length (mean±sd over repeats), and the
    AUROC gain of each cross-validated ridge over the MLE."""
    print(
        f"\n{args.neurons}-neuron BernoulliGLM, {args.seeds} repeats, calls at FDR q = "
        f"{args.q:g}, ridge chosen on the last of {args.folds} blocks (mean±sd over repeats)"
    )
    for c, column in enumerate(SCORES):
        print(f"\n{column}\n{'steps':>9s} " + " ".join(f"{m:>15s}" for m in METHODS))
        for steps in lengths:
            cells = [spread(summary[m][steps][:, c], 4 if c == 0 else 3) for m in METHODS]
            print(f"{steps:9d} " + " ".join(f"{cell:>15s}" for cell in cells))
    for method in METHODS[:2]:
        print(f"\n{method} AUROC − MLE AUROC (repeats above):")
        for steps in lengths:
            gain = summary[method][steps][:, 0] - summary["MLE"][steps][:, 0]
            print(f"{steps:9d} {spread(gain, 4):>15s} {int((gain > 0).sum())}/{len(gain)}")


def plot(summary: dict, lengths: list[int], args: argparse.Namespace) -> None:
    """AUROC, false-call rate and false discovery proportion against length (mean±sd over
    repeats; the rates with a line at q), to ``args.out``."""
    labels = ("edge AUROC", "false calls / absent pairs", "false calls / calls (FDP)")
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for method, marker in zip(METHODS, "oDs^", strict=True):
        for c, axis in enumerate(axes):
            values = torch.stack([summary[method][steps][:, c] for steps in lengths])
            sd = values.std(1) if values.shape[1] > 1 else torch.zeros(len(lengths))
            axis.errorbar(lengths, values.mean(1), sd, marker=marker, capsize=3, label=method)
    axes[0].axhline(0.5, color="grey", lw=0.8)
    for axis in axes[1:]:
        axis.axhline(args.q, color="grey", lw=0.8, ls="--", label=f"q = {args.q:g}")
    for axis, label in zip(axes, labels, strict=True):
        axis.set(xscale="log", xlabel="recording length (steps)", ylabel=label)
    axes[0].legend()
    axes[2].legend()
    figure.suptitle(f"{args.neurons}-neuron BernoulliGLM, {args.seeds} repeats")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
