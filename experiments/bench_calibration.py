"""Calibration benchmark: spikefit's RateCalibration against the reference simulator's tune().

Both start from the seed introduction BernoulliGLM (theta = 5, about 7 Hz) on the same 10
networks of 50 neurons (NormalGenerator, Dale's law, glorot std 5) and tune theta to 10 Hz.
Done means: the rate of a fresh simulation (another seed, 10,000 steps) is within 2% of 10 Hz.

What is counted:

- spikefit: the wall time of ``trainer.fit`` of a default ``RateCalibration`` (Gauss–Newton)
  with ``figures=False``: every training step (simulations, teacher forcing, Jacobians,
  solves) and its own fresh 10,000-step validation simulations, until it stops itself on a
  validation within 2%. Left out: building the Trainer, and the two PNG figures the CLI draws
  at the end (matplotlib; the reference draws none). One fit per seed (``--seeds``; a
  calibration is random, so one seed is one sample); the median time is reported.
- reference (spikeometric 1.0.3): ``tune()`` in rounds of ``--round-epochs`` epochs (its
  defaults: 100 steps per epoch, lr 0.1; each call starts a fresh Adam); after each round its
  own ``simulate()`` measures the rate on 10,000 fresh steps, which is how its user learns
  whether it is done. It stops when done or after ``--max-seconds`` of tuning. One run per
  generator seed (``--reference-seeds``). Three median times are reported:

  1. tune() alone: a lower bound that does less than spikefit's time covers (no fresh
     simulation at all, and it could not know when to stop);
  2. tune() plus one 10,000-step check: the same work as spikefit's run (tuning, then one
     fresh 10,000-step simulation that shows it is within 2%), as if an oracle had told the
     reference when to check; the like-for-like comparison;
  3. tune() plus all its checks: what its user actually runs.
- Both are warmed up first (one untimed fit, one untimed epoch of ``tune()``), so neither
  pays the process's first-call costs.

Finally every tuned theta is measured with the same simulator (spikefit's engine, 50,000
fresh steps, another seed; ± is the standard error from 10 blocks of 5,000 steps), and the
script prints the times, both speed ratios and the final errors.

Run: ``python experiments/bench_calibration.py`` (needs ``pip install --no-deps
spikeometric==1.0.3``), on a quiet machine (the times are wall times).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
from torch_geometric.loader import DataLoader

from spikefit.data import NetworkDataModule
from spikefit.models import BernoulliGLM
from spikefit.tasks import RateCalibration
from spikefit.tasks.calibration import SEED_INTRODUCTION

TARGET_HZ = 10.0
TOLERANCE = 0.02


def fresh_rate_hz(model, data, steps: int, seed: int) -> tuple[float, float]:
    """Mean rate of a fresh spikefit simulation and its standard error (10 blocks), in Hz."""
    spikes = model.simulate(data, steps, seed=seed, verbose=False)
    blocks = spikes.float().view(spikes.shape[0], 10, -1).mean(dim=(0, 2)) * 1000
    return blocks.mean().item(), blocks.std().item() / 10**0.5


class ValidationTimer(L.Callback):
    """Adds up the wall time of the validation batches (the fresh simulations)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def on_validation_batch_start(self, *args) -> None:
        self.started = time.perf_counter()

    def on_validation_batch_end(self, *args) -> None:
        self.seconds += time.perf_counter() - self.started


def fit_spikefit(datamodule: NetworkDataModule, seed: int) -> tuple[float, float, RateCalibration]:
    """Wall time of ``trainer.fit`` of the default calibration with ``seed``, the part of it
    spent validating, and the task."""
    task = RateCalibration(
        BernoulliGLM(**SEED_INTRODUCTION),
        target_rate_hz=TARGET_HZ,
        tolerance=TOLERANCE,
        figures=False,
        seed=seed,
    )
    timer = ValidationTimer()
    trainer = L.Trainer(
        max_epochs=50,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
        callbacks=[timer],
        default_root_dir=tempfile.mkdtemp(prefix="bench_calibration_"),
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule)
    return time.perf_counter() - start, timer.seconds, task


def run_spikefit(datamodule: NetworkDataModule, seeds: int) -> tuple[float, float, list[float]]:
    """Median wall time over fits with seeds 0..seeds-1, its median without the validation,
    and every fit's theta."""
    fit_spikefit(datamodule, seed=1000)  # warm-up, untimed
    times, tuning, thetas = [], [], []
    for seed in range(seeds):
        elapsed, validating, task = fit_spikefit(datamodule, seed)
        summary = task.summary()
        times.append(elapsed)
        tuning.append(elapsed - validating)
        thetas.append(task.model.theta.item())
        print(
            f"spikefit seed {seed}: {summary['steps']} Gauss–Newton steps, converged="
            f"{summary['converged']}, validation rate "
            f"{summary['achieved_rate_hz']['global']:.3f} Hz on 10,000 fresh steps × "
            f"{summary['validation_trials']}, theta {thetas[-1]:.4f}; {elapsed:.3f} s "
            f"({validating:.3f} s of it validating)"
        )
    return statistics.median(times), statistics.median(tuning), thetas


def run_reference(
    data, seed: int, round_epochs: int, max_seconds: float
) -> tuple[tuple[float, float, float], float, bool]:
    """The three times (tuning; plus the last check; plus all checks), theta, and whether it
    is done."""
    from spikeometric.models import BernoulliGLM as ReferenceGLM

    model = ReferenceGLM(**SEED_INTRODUCTION, rng=torch.Generator().manual_seed(seed))
    tuning, checking, done, rounds = 0.0, 0.0, False, 0
    while not done and tuning < max_seconds:
        start = time.perf_counter()
        model.tune(
            data, TARGET_HZ, tunable_parameters=["theta"], n_epochs=round_epochs, verbose=False
        )
        tuning += time.perf_counter() - start
        rounds += 1
        start = time.perf_counter()
        with torch.no_grad():
            spikes = model.simulate(data, 10_000, verbose=False)
        check = time.perf_counter() - start
        checking += check
        rate = spikes.float().mean().item() * 1000
        done = abs(rate - TARGET_HZ) <= TOLERANCE * TARGET_HZ
    print(
        f"reference seed {seed}: {rounds * round_epochs} epochs, {tuning:.2f} s of tuning + "
        f"{checking:.1f} s of 10,000-step checks, last fresh rate {rate:.3f} Hz, theta "
        f"{model.theta.item():.4f}{'' if done else ' (NOT within 2%)'}"
    )
    return (tuning, tuning + check, tuning + checking), model.theta.item(), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-epochs", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--reference-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    try:
        from spikeometric.models import BernoulliGLM as ReferenceGLM
    except ImportError:
        sys.exit("the reference simulator is missing: pip install --no-deps spikeometric==1.0.3")

    datamodule = NetworkDataModule(n_networks=10, batch_size=10)
    datamodule.setup()
    data = next(iter(DataLoader(datamodule.networks, batch_size=10)))
    start_rate, _ = fresh_rate_hz(BernoulliGLM(**SEED_INTRODUCTION), data, 10_000, seed=1)
    print(f"start: theta 5, fresh rate {start_rate:.3f} Hz; target {TARGET_HZ} Hz ± 2%")

    ours_time, ours_tuning, ours_thetas = run_spikefit(datamodule, args.seeds)
    warm_up = ReferenceGLM(**SEED_INTRODUCTION, rng=torch.Generator().manual_seed(1000))
    warm_up.tune(data, TARGET_HZ, tunable_parameters=["theta"], n_epochs=1, verbose=False)
    reference = [
        run_reference(data, seed, args.round_epochs, args.max_seconds)
        for seed in range(args.reference_seeds)
    ]
    tuning, one_check, all_checks = (
        statistics.median(run[0][k] for run in reference) for k in range(3)
    )

    print("\nfinal rates, every theta on the same simulator (spikefit, 50,000 fresh steps):")
    print(f"{'':14} {'theta':>8} {'rate (Hz)':>16} {'error':>7}")
    errors: dict[str, list[float]] = {"spikefit": [], "reference": []}
    runs = [("spikefit", seed, theta) for seed, theta in enumerate(ours_thetas)]
    runs += [("reference", seed, run[1]) for seed, run in enumerate(reference)]
    for name, seed, theta in runs:
        model = BernoulliGLM(**{**SEED_INTRODUCTION, "theta": theta})
        rate, error = fresh_rate_hz(model, data, 50_000, seed=12345)
        errors[name].append(abs(rate - TARGET_HZ) / TARGET_HZ)
        print(f"{name} {seed:<4} {theta:8.4f} {rate:9.3f} ± {error:.3f} {errors[name][-1]:7.2%}")
    undone = sum(not run[2] for run in reference)
    note = f" ({undone} reference run(s) NOT within 2% after {args.max_seconds:.0f} s)" * (
        undone > 0
    )
    print(
        f"\ntimes (medians): spikefit {ours_time:.3f} s (tuning and its validation); "
        f"reference: tune() alone {tuning:.2f} s, tune() + one 10,000-step check "
        f"{one_check:.2f} s, tune() + all its checks {all_checks:.1f} s{note}"
    )
    print(
        f"speed-up: {one_check / ours_time:.1f}x like for like (tune() + one check; goal "
        f"≥ 10x), {all_checks / ours_time:.1f}x against tune() + all its checks, "
        f"{tuning / ours_time:.1f}x against tune() alone (no validation); tuning alone "
        f"on both sides (spikefit without its validation, {ours_tuning:.3f} s): "
        f"{tuning / ours_tuning:.1f}x"
    )
    mean = {name: statistics.mean(values) for name, values in errors.items()}
    print(
        f"final error (mean |error| over runs): spikefit {mean['spikefit']:.2%} (max "
        f"{max(errors['spikefit']):.2%}), reference {mean['reference']:.2%} (max "
        f"{max(errors['reference']):.2%}); more accurate: "
        f"{mean['spikefit'] < mean['reference']}"
    )


if __name__ == "__main__":
    main()
