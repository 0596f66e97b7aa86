"""The cost of a basis of coupling kernels: K = 8 functions against one, on a 100-step window.

One network of 100 neurons, densely coupled (all 9,900 pairs), the seed BernoulliGLM's
refractory kernel, a coupling window of 100 steps. K = 1: the seed's exponential coupling
kernel, one weight per edge. K = 8: a log-stretched raised-cosine basis
(:class:`~spikefit.models.bases.RaisedCosineLog`) with 8 weights per edge (the network's W0
is [E, 8]), scaled so that both networks fire at similar rates. Both are simulated by the
fast engine, on the compiled loop where it builds and on the Python loop, to show the cost of
the basis alone on each. Teacher forcing
(``input_from_spikes`` of the simulated raster, what calibration and fits evaluate) is timed
too.

Times are the best of 3 runs after a warm-up, on ``torch.get_num_threads()`` threads.

Run: ``python experiments/bench_basis.py`` (``--steps`` to change the 20,000 steps).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch_geometric.data import Data

from spikefit.models import BernoulliGLM
from spikefit.models.bases import RaisedCosineLog
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION
from spikefit.models.engine import steppers

N_NEURONS, WINDOW, N_BASIS = 100, 100, 8
#: Scale of the K = 8 weights, chosen so that both networks fire at similar rates.
BASIS_SCALE = 0.1
SEED = {**SEED_INTRODUCTION, "coupling_window": WINDOW}


class BasisGLM(BernoulliGLM):
    """The seed BernoulliGLM with its coupling kernels on a raised-cosine basis."""

    def coupling_basis(self) -> torch.Tensor:
        return RaisedCosineLog(N_BASIS, WINDOW)().to(self.dt.device)


def network(n_basis: int, scale: float) -> Data:
    """All ordered pairs of N neurons, weights N(0, scale²/N) per edge (and basis
    function)."""
    pairs = (~torch.eye(N_NEURONS, dtype=torch.bool)).nonzero().t()
    generator = torch.Generator().manual_seed(0)
    shape = (pairs.shape[1],) if n_basis == 1 else (pairs.shape[1], n_basis)
    weights = torch.randn(shape, generator=generator) * scale / N_NEURONS**0.5
    return Data(edge_index=pairs, W0=weights, num_nodes=N_NEURONS)


def best_of(run: Callable[[], object], repeats: int = 3) -> float:
    run()  # warm-up (and the compiled loop's build)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    steps = parser.parse_args().steps
    # the basis functions overlap (they sum to 2): smaller weights for similar rates
    cases = [
        ("K = 1, compiled loop", BernoulliGLM(**SEED), network(1, 1.0), False),
        ("K = 1, Python loop", BernoulliGLM(**SEED), network(1, 1.0), True),
        (f"K = {N_BASIS}, compiled loop", BasisGLM(**SEED), network(N_BASIS, BASIS_SCALE), False),
        (f"K = {N_BASIS}, Python loop", BasisGLM(**SEED), network(N_BASIS, BASIS_SCALE), True),
    ]
    print(
        f"{N_NEURONS} neurons, {N_NEURONS * (N_NEURONS - 1):,} edges, window {WINDOW} steps, "
        f"{steps:,} steps, {torch.get_num_threads()} threads"
    )
    print(
        f"{'case':24s} {'simulate':>10s} {'M neuron-steps/s':>17s} {'rate (Hz)':>10s} "
        f"{'teacher forcing':>16s}"
    )
    results = {}
    for name, model, data, python_loop in cases:
        original = steppers.compiled_loops
        if python_loop:
            steppers.compiled_loops = lambda: None
        try:
            spikes = model.simulate(data, steps, seed=1, verbose=False)
            simulated = best_of(lambda m=model, d=data: m.simulate(d, steps, seed=1, verbose=False))
        finally:
            steppers.compiled_loops = original
        raster = spikes.float().unsqueeze(0)
        with torch.no_grad():
            forced = best_of(lambda m=model, d=data, x=raster: m.input_from_spikes(d, x))
        rate = spikes.float().mean().item() * 1000
        results[name] = (simulated, forced)
        print(
            f"{name:24s} {simulated:9.2f}s {N_NEURONS * steps / simulated / 1e6:17.2f} "
            f"{rate:10.2f} {forced:15.3f}s"
        )
    for loop in ("compiled", "Python"):
        one, many = results[f"K = 1, {loop} loop"], results[f"K = {N_BASIS}, {loop} loop"]
        print(
            f"cost of the {N_BASIS}-function basis, {loop} loop: simulation "
            f"{many[0] / one[0]:.2f}x, teacher forcing {many[1] / one[1]:.2f}x the one-kernel "
            f"model"
        )


if __name__ == "__main__":
    main()
