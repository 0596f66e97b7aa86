"""Connectivity inference against recording length: the edge-detection AUROC of the maximum-
likelihood coupling (spikefit's Newton solver, all N(N-1) pairs) and of a cross-correlation
baseline.

A 50-neuron BernoulliGLM (seed introduction parameters, glorot normal network with std 5) is
simulated once for the longest length; every shorter recording is its beginning. The baseline
scores a pair j → i by the Pearson correlation of j's coupling-filtered spikes (the model's
presynaptic trace) with i's spikes, i.e. the kernel-weighted cross-correlogram at positive lags.

Run: python experiments/connectivity_recovery.py [--max-steps 1000000] [--out recovery.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import matplotlib
import torch
from torchmetrics.functional.classification import binary_auroc

from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import NormalGenerator, graph_to_dense
from spikefit.models import BernoulliGLM
from spikefit.tasks import LikelihoodFit, Newton
from spikefit.tasks.calibration import SEED_INTRODUCTION

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LENGTHS = (10_000, 30_000, 100_000, 300_000, 1_000_000)


def fitted_coupling(spikes: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood coupling [N, N] (threshold and refractory scale per neuron)."""
    task = LikelihoodFit(
        BernoulliGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        refractory_scale=True,
        coupling="dense",
        solver=Newton(),
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
    return task.coupling_matrix().detach()


def cross_correlation(spikes: torch.Tensor) -> torch.Tensor:
    """[N, N] correlation of presynaptic traces (rows, pre) with spikes (columns, post)."""
    trace = BernoulliGLM(**SEED_INTRODUCTION).presynaptic_trace(spikes.unsqueeze(0).float())[0]
    pre = trace - trace.mean(1, keepdim=True)
    post = spikes.float() - spikes.float().mean(1, keepdim=True)
    covariance = pre @ post.t() / spikes.shape[1]
    return covariance / (pre.std(1).unsqueeze(1) * post.std(1).unsqueeze(0)).clamp(min=1e-12)


def auroc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """AUROC of |scores| for the nonzero entries of ``truth`` over all off-diagonal pairs."""
    off = ~torch.eye(len(truth), dtype=torch.bool)
    return float(binary_auroc(scores.abs()[off], (truth[off] != 0).long()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=LENGTHS[-1])
    parser.add_argument("--neurons", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="connectivity_recovery.png")
    args = parser.parse_args()
    lengths = [n for n in LENGTHS if n <= args.max_steps] or [args.max_steps]

    network = NormalGenerator(args.neurons, mean=0, std=5, glorot=True, seed=args.seed).generate(1)[
        0
    ]
    truth = graph_to_dense(network)
    spikes = BernoulliGLM(**SEED_INTRODUCTION).simulate(
        network, lengths[-1], seed=args.seed + 1, verbose=False
    )
    print(
        f"BernoulliGLM, {args.neurons} neurons, {int((truth != 0).sum())} edges of "
        f"{args.neurons * (args.neurons - 1)} pairs, "
        f"{spikes.float().mean() * 1000:.2f} Hz"
    )
    print(f"{'steps':>9s} {'spikes':>8s} {'MLE AUROC':>10s} {'xcorr AUROC':>12s} {'fit (s)':>8s}")
    rows = []
    for steps in lengths:
        part = spikes[:, :steps]
        started = time.perf_counter()
        mle = auroc(fitted_coupling(part), truth)
        seconds = time.perf_counter() - started
        xcorr = auroc(cross_correlation(part), truth)
        rows.append((steps, mle, xcorr))
        print(f"{steps:9d} {int(part.sum()):8d} {mle:10.4f} {xcorr:12.4f} {seconds:8.1f}")

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="maximum likelihood")
    axis.plot([r[0] for r in rows], [r[2] for r in rows], "s--", label="cross-correlation")
    axis.axhline(0.5, color="grey", lw=0.8)
    axis.set(
        xscale="log",
        xlabel="recording length (steps)",
        ylabel="edge AUROC",
        title=f"{args.neurons}-neuron BernoulliGLM",
    )
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
