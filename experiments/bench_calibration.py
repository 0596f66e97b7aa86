"""Calibration benchmark: spikefit's RateCalibration against the reference simulator's tune().

Both start from the seed introduction BernoulliGLM (theta = 5, about 7 Hz) on the same 10
networks of 50 neurons (NormalGenerator, Dale's law, glorot std 5) and tune theta to 10 Hz.
Done means: the rate of a fresh simulation (another seed, 10,000 steps) is within 2% of 10 Hz.

What is counted:

- spikefit: the wall time of ``trainer.fit`` of a default ``RateCalibration`` (Gauss–Newton)
  with ``figures=False``: every training step (simulations, teacher forcing, Jacobians,
  solves) and its own fresh 10,000-step validation simulations, until it stops itself on a
  validation within 2%. Left out: building the Trainer, and the two PNG figures the CLI draws
  at the end (matplotlib; the reference draws none). The fit runs ``--repeats`` times (same
  seed, same result); the median time is reported.
- reference (spikeometric 1.0.3): ``tune()`` in rounds of ``--round-epochs`` epochs (its
  defaults: 100 steps per epoch, lr 0.1; each call starts a fresh Adam); after each round its
  own ``simulate()`` measures the rate on 10,000 fresh steps, which is how its user learns
  whether it is done. Two times are reported: tune() alone (a lower bound: it cannot know
  when to stop without the simulations), and tune() plus those simulations. It stops when
  done or after ``--max-seconds`` of tuning.

Finally both tuned thetas are measured with the same simulator (spikefit's engine, 50,000
fresh steps, another seed; ± is the standard error from 10 blocks of 5,000 steps), and the
script prints the times, both speed ratios and both final errors.

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
    return blocks.mean().item(), blocks.std().item() / 10 ** 0.5


def run_spikefit(datamodule: NetworkDataModule, repeats: int) -> tuple[float, float]:
    """Median wall time of ``trainer.fit`` over ``repeats`` identical runs, and the theta."""
    times = []
    for _ in range(repeats):
        task = RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), target_rate_hz=TARGET_HZ,
                               tolerance=TOLERANCE, figures=False)
        trainer = L.Trainer(max_epochs=50, num_sanity_val_steps=0, enable_progress_bar=False,
                            enable_model_summary=False, logger=False, enable_checkpointing=False,
                            accelerator="cpu",
                            default_root_dir=tempfile.mkdtemp(prefix="bench_calibration_"))
        start = time.perf_counter()
        trainer.fit(task, datamodule)
        times.append(time.perf_counter() - start)
    summary = task.summary()
    elapsed = statistics.median(times)
    print(f"spikefit: {summary['steps']} Gauss–Newton steps, converged={summary['converged']}, "
          f"validation rate {summary['achieved_rate_hz']['global']:.3f} Hz on 10,000 fresh "
          f"steps × {summary['validation_trials']}, theta {task.model.theta.item():.4f}; "
          f"{elapsed:.3f} s (median of {', '.join(f'{t:.3f}' for t in times)})")
    return elapsed, task.model.theta.item()


def run_reference(data, round_epochs: int, max_seconds: float) -> tuple[float, float, float,
                                                                          bool]:
    """Tuning time, tuning plus validation-simulation time, theta, and whether it is done."""
    try:
        from spikeometric.models import BernoulliGLM as ReferenceGLM
    except ImportError:
        sys.exit("the reference simulator is missing: pip install --no-deps spikeometric==1.0.3")
    model = ReferenceGLM(**SEED_INTRODUCTION, rng=torch.Generator().manual_seed(0))
    tuning, checking, done, rounds = 0.0, 0.0, False, 0
    while not done and tuning < max_seconds:
        start = time.perf_counter()
        model.tune(data, TARGET_HZ, tunable_parameters=["theta"], n_epochs=round_epochs,
                   verbose=False)
        tuning += time.perf_counter() - start
        rounds += 1
        start = time.perf_counter()
        with torch.no_grad():
            spikes = model.simulate(data, 10_000, verbose=False)
        checking += time.perf_counter() - start
        rate = spikes.float().mean().item() * 1000
        done = abs(rate - TARGET_HZ) <= TOLERANCE * TARGET_HZ
        print(f"reference: {rounds * round_epochs} epochs, {tuning:.2f} s of tuning + "
              f"{checking:.1f} s of 10,000-step checks, fresh rate {rate:.3f} Hz, "
              f"theta {model.theta.item():.4f}")
    return tuning, tuning + checking, model.theta.item(), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-epochs", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)

    datamodule = NetworkDataModule(n_networks=10, batch_size=10)
    datamodule.setup()
    data = next(iter(DataLoader(datamodule.networks, batch_size=10)))
    start_rate, _ = fresh_rate_hz(BernoulliGLM(**SEED_INTRODUCTION), data, 10_000, seed=1)
    print(f"start: theta 5, fresh rate {start_rate:.3f} Hz; target {TARGET_HZ} Hz ± 2%")

    ours_time, ours_theta = run_spikefit(datamodule, args.repeats)
    tuning, tuning_and_checks, reference_theta, reference_done = run_reference(
        data, args.round_epochs, args.max_seconds)

    print("\nfinal rates, both thetas on the same simulator (spikefit, 50,000 fresh steps):")
    errors = {}
    print(f"{'':10} {'theta':>8} {'rate (Hz)':>16} {'error':>7}")
    for name, theta in (("spikefit", ours_theta), ("reference", reference_theta)):
        model = BernoulliGLM(**{**SEED_INTRODUCTION, "theta": theta})
        rate, error = fresh_rate_hz(model, data, 50_000, seed=12345)
        errors[name] = abs(rate - TARGET_HZ) / TARGET_HZ
        print(f"{name:10} {theta:8.4f} {rate:9.3f} ± {error:.3f} {errors[name]:7.2%}")
    note = "" if reference_done else f" (reference NOT within 2% after {tuning:.0f} s)"
    print(f"\ntimes: spikefit {ours_time:.3f} s (with its validation); reference tune() alone "
          f"{tuning:.2f} s, tune() + its 10,000-step checks {tuning_and_checks:.1f} s{note}")
    print(f"speed-up: {tuning / ours_time:.1f}x against tune() alone, "
          f"{tuning_and_checks / ours_time:.1f}x against tune() + checks (goal ≥ 10x)")
    print(f"final error: spikefit {errors['spikefit']:.2%}, reference {errors['reference']:.2%}"
          f" (more accurate: {errors['spikefit'] < errors['reference']})")


if __name__ == "__main__":
    main()
