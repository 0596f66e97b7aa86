"""Calibration benchmark: spikefit's RateCalibration against the reference simulator's tune().

Both start from the seed introduction BernoulliGLM (theta = 5, about 7 Hz) on the same 10
networks of 50 neurons (NormalGenerator, Dale's law, glorot std 5) and tune theta to 10 Hz.
Done means: the rate of a fresh simulation (another seed, 10,000 steps) is within 2% of 10 Hz.

- spikefit: one `RateCalibration` fit, which validates on fresh simulations itself and stops
  when done; its whole wall time counts.
- reference (spikeometric 1.0.3): `tune()` in rounds of ``--round-epochs`` epochs (its
  defaults: 100 steps per epoch, lr 0.1); after each round its own `simulate()` measures the
  rate on 10,000 fresh steps (not counted in its time); stops when done or after
  ``--max-seconds`` of tuning.

Finally both tuned thetas are measured with the same simulator (spikefit's engine, 50,000
fresh steps, another seed), and the script prints times, the speed ratio and final errors.

Run: ``python experiments/bench_calibration.py`` (needs ``pip install --no-deps
spikeometric==1.0.3``).
"""

from __future__ import annotations

import argparse
import logging
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


def fresh_rate_hz(model, data, steps: int, seed: int) -> float:
    """Mean rate of a fresh spikefit simulation, in Hz."""
    return model.simulate(data, steps, seed=seed, verbose=False).float().mean().item() * 1000


def run_spikefit(datamodule: NetworkDataModule) -> tuple[float, float]:
    task = RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), target_rate_hz=TARGET_HZ,
                           tolerance=TOLERANCE)
    trainer = L.Trainer(max_epochs=300, check_val_every_n_epoch=10, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False, accelerator="cpu",
                        default_root_dir=tempfile.mkdtemp(prefix="bench_calibration_"))
    start = time.perf_counter()
    trainer.fit(task, datamodule)
    elapsed = time.perf_counter() - start
    print(f"spikefit: {trainer.current_epoch} steps, converged={task.converged}, validation "
          f"rate {task.achieved['global']:.3f} Hz, theta {task.model.theta.item():.4f}, "
          f"{elapsed:.1f} s")
    return elapsed, task.model.theta.item()


def run_reference(data, round_epochs: int, max_seconds: float) -> tuple[float, float, bool]:
    try:
        from spikeometric.models import BernoulliGLM as ReferenceGLM
    except ImportError:
        sys.exit("the reference simulator is missing: pip install --no-deps spikeometric==1.0.3")
    model = ReferenceGLM(**SEED_INTRODUCTION, rng=torch.Generator().manual_seed(0))
    tuning, done, rounds = 0.0, False, 0
    while not done and tuning < max_seconds:
        start = time.perf_counter()
        model.tune(data, TARGET_HZ, tunable_parameters=["theta"], n_epochs=round_epochs,
                   verbose=False)
        tuning += time.perf_counter() - start
        rounds += 1
        with torch.no_grad():
            spikes = model.simulate(data, 10_000, verbose=False)
        rate = spikes.float().mean().item() * 1000
        done = abs(rate - TARGET_HZ) <= TOLERANCE * TARGET_HZ
        print(f"reference: {rounds * round_epochs} epochs, {tuning:.1f} s of tuning, fresh rate "
              f"{rate:.3f} Hz, theta {model.theta.item():.4f}")
    return tuning, model.theta.item(), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-epochs", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)

    datamodule = NetworkDataModule(n_networks=10, batch_size=10)
    datamodule.setup()
    data = next(iter(DataLoader(datamodule.networks, batch_size=10)))
    start_rate = fresh_rate_hz(BernoulliGLM(**SEED_INTRODUCTION), data, 10_000, seed=1)
    print(f"start: theta 5, fresh rate {start_rate:.3f} Hz; target {TARGET_HZ} Hz ± 2%")

    ours_time, ours_theta = run_spikefit(datamodule)
    reference_time, reference_theta, reference_done = run_reference(
        data, args.round_epochs, args.max_seconds)

    print("\nfinal rates, both thetas on the same simulator (spikefit, 50,000 fresh steps):")
    rows = []
    for name, theta, seconds in (("spikefit", ours_theta, ours_time),
                                 ("reference", reference_theta, reference_time)):
        model = BernoulliGLM(**{**SEED_INTRODUCTION, "theta": theta})
        rate = fresh_rate_hz(model, data, 50_000, seed=12345)
        rows.append((name, seconds, theta, rate, abs(rate - TARGET_HZ) / TARGET_HZ))
    print(f"{'':10} {'time (s)':>9} {'theta':>8} {'rate (Hz)':>10} {'error':>7}")
    for name, seconds, theta, rate, error in rows:
        print(f"{name:10} {seconds:9.1f} {theta:8.4f} {rate:10.3f} {error:7.2%}")
    note = "" if reference_done else f" (reference NOT within 2% after {reference_time:.0f} s)"
    print(f"\nspeed-up: {reference_time / ours_time:.1f}x (goal ≥ 10x){note}; "
          f"more accurate: {rows[0][4] <= rows[1][4]}")


if __name__ == "__main__":
    main()
