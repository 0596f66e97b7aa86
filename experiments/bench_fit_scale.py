"""Time and peak memory of a recording-sized likelihood fit as the number of units N and the
number of bins T grow.

The recording is simulated: a FilterGLM network (Bernoulli, 1 ms bins) with 8 raised-cosine-log
functions over 100 ms for the coupling and for every unit's own history, a sparse Dale network
(95% of the pairs uncoupled, each edge's filter a decaying profile on the basis), a refractory
own filter with a rebound and offsets b = -5.3 (about 5 Hz). The fit is the model of
``configs/fit_recording.yaml`` at one ridge strength: every pair's 8 coupling weights, every
unit's offset and own-history weights, NewtonCG, ``L2(1e-5, self_filter=0.01)``, the last
quarter held out, with the posterior-predictive check and the standard errors off (their
exact Hessian blocks cost N·T·(8N)² and are not what is measured here). The data module
serves chunks of 20,000 bins and the fit keeps at most ``--cache-gib`` of traces and designs,
computing the other chunks again at every use.

Every size runs in a fresh process; its peak memory is that process's largest resident set
(``ru_maxrss``), simulation included. With ``--newton-iterations`` the fit stops after that
many Newton iterations (the memory is at its peak from the first one on: every chunk's traces
and design are made in it) and the time per iteration is reported.

Run: python experiments/bench_fit_scale.py [--units 50,100,200] [--minutes 5]
[--grow-minutes 2,5,10] [--grow-units 100] [--cache-gib 8] [--threads 2]
[--headline 300:30 --newton-iterations 1]. The default table took 17 minutes on two cores
shared with other jobs; the headline (300 units, 30 minutes: 1.8 M bins) 7.5 minutes per
Newton iteration on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import lightning as L
import torch

from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import NormalGenerator
from spikefit.models import FilterGLM
from spikefit.tasks import L2, LikelihoodFit, NewtonCG

N_BASIS, WINDOW_MS, OFFSET = 8, 100.0, -5.3
#: the own filter on the basis: refractoriness at short lags, a rebound after
SELF_WEIGHTS = [-8.0, -4.0, -1.0, 0.0, 0.3, 0.0, 0.0, 0.0]
#: every edge's filter on the basis, times the edge's weight
EDGE_PROFILE = [1.0, 0.8, 0.5, 0.3, 0.15, 0.05, 0.0, 0.0]


def recording(units: int, bins: int, seed: int = 0) -> torch.Tensor:
    """The simulated raster [N, T]."""
    network = NormalGenerator(units, mean=0, std=6, sparsity=0.95, glorot=True, seed=seed)
    data = network.generate(1)[0]
    data.W0 = data.W0.unsqueeze(1) * torch.tensor(EDGE_PROFILE)
    model = FilterGLM(window_ms=WINDOW_MS, n_basis=N_BASIS, b=OFFSET, self_weights=SELF_WEIGHTS)
    return model.simulate(data, bins, seed=seed + 1, verbose=False)


def fit(spikes: torch.Tensor, cache_gib: float, newton_iterations: int | None) -> dict:
    """Fits the raster; the fit's wall time and what it found."""
    solver = NewtonCG() if newton_iterations is None else NewtonCG(max_iter=newton_iterations)
    task = LikelihoodFit(
        FilterGLM(window_ms=WINDOW_MS, n_basis=N_BASIS),
        per_neuron=["b", "self_weights"],
        coupling="dense",
        solver=solver,
        regularizer=L2(1e-5, self_filter=0.01),
        check_steps=0,
        cache_gib=cache_gib,
        compute_uncertainty=False,
    )
    data = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0.25, chunk_bins=20_000)
    with tempfile.TemporaryDirectory() as log_dir:
        started = time.perf_counter()
        L.Trainer(
            max_epochs=1 if newton_iterations is not None else 20,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=log_dir,
        ).fit(task, data)
        seconds = time.perf_counter() - started
    summary = task.summary()
    return {
        "fit_s": seconds,
        "converged": bool(task.converged),
        "heldout_bits_per_spike": summary["bits_per_spike"].get("heldout"),
    }


def one(units: int, bins: int, cache_gib: float, newton_iterations: int | None) -> dict:
    """One size, in this process: simulation, fit and this process's peak memory."""
    started = time.perf_counter()
    spikes = recording(units, bins)
    simulated = time.perf_counter() - started
    result = fit(spikes, cache_gib, newton_iterations)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "units": units,
        "bins": bins,
        "rate_hz": float(spikes.float().mean()) * 1000,
        "simulate_s": simulated,
        "peak_gib": peak_kib / 2**20,
        "newton_iterations": newton_iterations,
        **result,
    }


def in_fresh_process(units: int, bins: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", f"{units}:{bins}", "--cache-gib"]
    command += [str(args.cache_gib), "--threads", str(args.threads)]
    if args.newton_iterations is not None:
        command += ["--newton-iterations", str(args.newton_iterations)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def show(row: dict) -> None:
    iterations = row["newton_iterations"]
    note = "converged" if row["converged"] else "not converged"
    if iterations is not None:
        note = f"{iterations} Newton iterations: {row['fit_s'] / iterations:.0f} s each"
    heldout = row["heldout_bits_per_spike"]
    print(
        f"{row['units']:6d} {row['bins']:10,d} {row['rate_hz']:6.2f} {row['simulate_s']:8.1f} "
        f"{row['fit_s']:8.1f} {row['peak_gib']:9.2f} "
        f"{heldout if heldout is None else format(heldout, '.4f'):>9}  {note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", default="50,100,200", help="N at --minutes")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--grow-minutes", default="2,5,10", help="T at --grow-units")
    parser.add_argument("--grow-units", type=int, default=100)
    parser.add_argument("--headline", default=None, help="units:minutes, e.g. 300:30")
    parser.add_argument("--cache-gib", type=float, default=8.0)
    parser.add_argument("--newton-iterations", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one is not None:
        units, bins = (int(x) for x in args.one.split(":"))
        print(json.dumps(one(units, bins, args.cache_gib, args.newton_iterations)))
        return

    sizes = [(int(n), int(args.minutes * 60_000)) for n in args.units.split(",") if n]
    sizes += [(args.grow_units, int(float(m) * 60_000)) for m in args.grow_minutes.split(",") if m]
    if args.headline:
        units, minutes = args.headline.split(":")
        sizes.append((int(units), int(float(minutes) * 60_000)))
    print(
        f"FilterGLM fits, {N_BASIS} functions per filter over {WINDOW_MS:g} ms, NewtonCG, "
        f"cache {args.cache_gib:g} GiB, {args.threads} thread(s); each size in a fresh process"
    )
    print(
        f"{'units':>6s} {'bins':>10s} {'Hz':>6s} {'sim s':>8s} {'fit s':>8s} {'peak GiB':>9s} "
        f"{'heldout':>9s}  (bits/spike)"
    )
    for units, bins in dict.fromkeys(sizes):
        show(in_fresh_process(units, bins, args))


if __name__ == "__main__":
    main()
