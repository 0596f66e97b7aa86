"""Accuracy of the default calibration across seeds: where the tuned rate really lands.

The default problem of ``bench_calibration.py`` (seed BernoulliGLM, 10 × 50 neurons, theta 5
→ 10 Hz) is calibrated with seeds 0..n-1; every tuned theta is then simulated for
``--check-steps`` fresh steps (another seed) and its rate compared with 10 Hz. The default
``precision`` asks for a 0.4% standard error of the final step, so the root-mean-square error
should come out near 0.4% (plus the check's own noise, about 0.1% for 200,000 steps).

Prints one line per seed (steps, time, the first step's landing error, the final error) and
the summary; draws the histogram of final errors to ``--out``.

Run: ``python experiments/calibration_accuracy.py [--seeds 16] [--out calibration_accuracy.png]``
"""

from __future__ import annotations

import argparse
import logging
import statistics

import matplotlib
import torch
from bench_calibration import TARGET_HZ, fit_spikefit
from torch_geometric.loader import DataLoader

from spikefit.data import NetworkDataModule
from spikefit.models import BernoulliGLM
from spikefit.tasks.calibration import SEED_INTRODUCTION

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--check-steps", type=int, default=200_000)
    parser.add_argument("--out", default="calibration_accuracy.png")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)

    datamodule = NetworkDataModule(n_networks=10, batch_size=10)
    datamodule.setup()
    data = next(iter(DataLoader(datamodule.networks, batch_size=10)))
    errors, times = [], []
    for seed in range(args.seeds):
        elapsed, _, task = fit_spikefit(datamodule, seed)
        theta = task.model.theta.item()
        model = BernoulliGLM(**{**SEED_INTRODUCTION, "theta": theta})
        spikes = model.simulate(data, args.check_steps, seed=5000 + seed, verbose=False)
        errors.append(spikes.float().mean().item() * 1000 / TARGET_HZ - 1)
        times.append(elapsed)
        print(
            f"seed {seed:2}: {task.global_step} steps, {elapsed:.3f} s, theta {theta:.4f}, "
            f"validated {task.achieved['global']:.3f} Hz, final error {errors[-1]:+.2%}"
        )
    rms = (sum(e * e for e in errors) / len(errors)) ** 0.5
    print(
        f"\n{args.seeds} seeds: rms error {rms:.2%}, mean |error| "
        f"{statistics.mean(abs(e) for e in errors):.2%}, max |error| "
        f"{max(abs(e) for e in errors):.2%}; median time {statistics.median(times):.3f} s"
    )
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.hist([100 * e for e in errors], bins=12)
    axis.axvline(0, color="k", lw=0.8)
    axis.set(
        xlabel=f"final rate error (%) on {args.check_steps:,} fresh steps",
        ylabel="seeds",
        title="default calibration, 10 Hz target",
    )
    figure.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
