"""Benchmark spikefit's simulator against the reference simulator spikeometric 1.0.3.

Both simulators run in one process, with the same ``torch.set_num_threads``, on the *same*
networks: dense weight matrices from spikefit's ``NormalGenerator(n, mean=0, std=5,
glorot=True)`` are turned into one PyTorch Geometric batch that is fed to both. The model is
the BernoulliGLM with the seed introduction parameters; both use ``equilibration_steps=100``.

Cases: (a) 10 networks x 50 neurons x 5,000 steps, (b) 20 x 100 x 2,000, (c) as (b) with 20
trials, (d) one sparse (sparsity 0.9) 1,000-neuron network x 2,000 steps.

Measured: throughput in neuron-steps per second (neuron-steps-trials with trials), counting the
recorded steps only while the timed call also runs the equilibration, and the ratio
spikefit / reference against the goal of the issue (>= 30x single-trial, >= 150x with 20
trials). Each simulator is warmed up on a few steps first; times are the best of 3 runs
(spikefit) or of 2 independent runs (reference), which damps noise from other processes. The
reference has no trial dimension: for the trials case it runs ``--reference-trials`` (default 3)
single trials and 20 x its best trial time stands for 20 sequential trials; ``--reference-steps``
shortens its runs. Such extrapolated figures (constant per-step cost) are marked in the output.
As a correctness check the mean rates (all runs) are compared: the difference in units of the
binomial standard error (an approximation: spikes are not independent) is flagged beyond 4 s.e.

Run: ``python experiments/bench_simulation.py`` (``--quick`` for a smoke run, steps / 10).
Needs ``pip install --no-deps spikeometric==1.0.3``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from spikefit.datasets import NormalGenerator
from spikefit.models import BernoulliGLM
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION as PARAMS

try:
    from spikeometric.models import BernoulliGLM as ReferenceGLM
except ImportError:
    sys.exit("spikeometric is not installed: pip install --no-deps spikeometric==1.0.3")

EQUILIBRATION = 100
GOAL_SINGLE, GOAL_TRIALS = 30.0, 150.0


@dataclass
class Case:
    name: str
    n_networks: int
    n_neurons: int
    n_steps: int
    n_trials: int = 1
    sparsity: float = 0.5


CASES = [
    Case("a", 10, 50, 5000),
    Case("b", 20, 100, 2000),
    Case("c", 20, 100, 2000, n_trials=20),
    Case("d", 1, 1000, 2000, sparsity=0.9),
]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[Any]]:
    """Best (minimum) wall time of ``repeats`` calls of ``fn``, and all their results."""
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - start)
    return min(times), results


def make_batch(case: Case, seed: int) -> Batch:
    """The case's networks, as one PyG batch shared by both simulators."""
    gen = NormalGenerator(
        case.n_neurons, mean=0, std=5, sparsity=case.sparsity, glorot=True, seed=seed
    )
    graphs = []
    for _ in range(case.n_networks):
        W = gen.generate_W0()
        edge_index = W.nonzero().t()
        graphs.append(
            Data(
                edge_index=edge_index, W0=W[edge_index[0], edge_index[1]], num_nodes=case.n_neurons
            )
        )
    return next(iter(DataLoader(graphs, batch_size=case.n_networks)))


def spike_count(x: torch.Tensor) -> int:
    return int(x.sum(dtype=torch.int64))


def run_case(case: Case, data: Batch, ref_steps: int, ref_runs: int) -> dict[str, Any]:
    model = BernoulliGLM(**PARAMS)
    reference = ReferenceGLM(**PARAMS, rng=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.simulate(data, 10, seed=1, equilibration_steps=10, verbose=False)  # warm-up
        reference.simulate(data, n_steps=10, verbose=False, equilibration_steps=10)
        t_fit, xs = timed(
            lambda: model.simulate(
                data,
                case.n_steps,
                seed=0,
                n_trials=case.n_trials,
                equilibration_steps=EQUILIBRATION,
                verbose=False,
            ),
            repeats=3,
        )
        fit_count, fit_n = spike_count(xs[-1]), xs[-1].numel()  # same seed: same spikes
        del xs
        # one trial per run; the runs are independent (the generator moves on)
        t_ref, xs = timed(
            lambda: reference.simulate(
                data, n_steps=ref_steps, verbose=False, equilibration_steps=EQUILIBRATION
            ),
            repeats=ref_runs,
        )
    ref_count, ref_n = sum(map(spike_count, xs)), sum(x.numel() for x in xs)
    # all steps (equilibration included) and all trials, at the reference's constant step cost
    t_ref *= (case.n_steps + EQUILIBRATION) / (ref_steps + EQUILIBRATION) * case.n_trials
    work = case.n_networks * case.n_neurons * case.n_steps * case.n_trials
    p_fit, p_ref = fit_count / fit_n, ref_count / ref_n
    p = (fit_count + ref_count) / (fit_n + ref_n)
    se = math.sqrt(p * (1 - p) * (1 / fit_n + 1 / ref_n))
    hz = 1000.0 / PARAMS["dt"]
    return dict(
        fit=work / t_fit,
        ref=work / t_ref,
        ratio=t_ref / t_fit,
        rate_fit=p_fit * hz,
        rate_ref=p_ref * hz,
        z=(p_fit - p_ref) / se if se else 0.0,
        extrapolated=ref_steps < case.n_steps or case.n_trials > 1,
        goal=GOAL_TRIALS if case.n_trials > 1 else GOAL_SINGLE,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="steps / 10 (smoke run)")
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=None,
        help="cap on the reference's steps (its time is extrapolated)",
    )
    parser.add_argument(
        "--reference-trials",
        type=int,
        default=3,
        help="trials the reference runs in the trials case (time scaled up)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"equilibration {EQUILIBRATION} steps, BernoulliGLM {PARAMS}"
    )

    rows = []
    start = time.perf_counter()
    for seed, case in enumerate(CASES):
        if args.quick:
            case = replace(case, n_steps=case.n_steps // 10)
        ref_steps = min(case.n_steps, args.reference_steps or case.n_steps)
        ref_runs = min(case.n_trials, args.reference_trials) if case.n_trials > 1 else 2
        r = run_case(case, make_batch(case, seed), ref_steps, ref_runs)
        met = r["ratio"] >= r["goal"]
        agree = abs(r["z"]) <= 4
        print(
            f"\n({case.name}) {case.n_networks} networks x {case.n_neurons} neurons x "
            f"{case.n_steps} steps x {case.n_trials} trial(s), sparsity {case.sparsity}"
        )
        print(f"  spikefit  {r['fit']:14,.0f} neuron-steps/s  [best of 3 runs]")
        note = (
            f"  [EXTRAPOLATED to {case.n_steps} steps x {case.n_trials} trial(s) from the "
            f"best of {ref_runs} run(s) of {ref_steps} steps x 1 trial]"
            if r["extrapolated"]
            else f"  [best of {ref_runs} runs]"
        )
        print(f"  reference {r['ref']:14,.0f} neuron-steps/s{note}")
        print(f"  ratio {r['ratio']:.1f}x, goal >= {r['goal']:.0f}x: {'MET' if met else 'NOT MET'}")
        print(
            f"  mean rate spikefit {r['rate_fit']:.3f} Hz, reference {r['rate_ref']:.3f} Hz, "
            f"difference {r['z']:+.2f} s.e. {'ok' if agree else '** DISAGREE (> 4 s.e.) **'}"
        )
        rows.append((case.name, r, met, agree))

    print(
        f"\n{'case':<5}{'spikefit n·st/s':>17}{'reference n·st/s':>18}{'ratio':>8}{'goal':>6}"
        f"{'met':>5}{'Hz fit':>9}{'Hz ref':>9}{'diff/se':>9}"
    )
    for name, r, met, agree in rows:
        mark = "*" if r["extrapolated"] else " "
        print(
            f"{name:<5}{r['fit']:>17,.0f}{r['ref']:>17,.0f}{mark}{r['ratio']:>7.1f}x"
            f"{r['goal']:>5.0f}x{'yes' if met else 'no':>5}{r['rate_fit']:>9.3f}"
            f"{r['rate_ref']:>9.3f}{r['z']:>+8.2f}{'' if agree else '!'}"
        )
    if any(r["extrapolated"] for _, r, _, _ in rows):
        print(
            "* reference extrapolated from fewer steps or trials (its per-step cost is "
            "constant), see above"
        )
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
