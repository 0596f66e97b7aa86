"""Benchmark spikefit's simulator against Brian2 (C++ standalone) and NEST on the same networks.

Every simulator runs the *same* networks (edges and weights from spikefit's
``NormalGenerator``), the same model equations and parameters, on one thread each, in its own
process (``--worker``), and the mean rates are checked to agree within 10%:

- BernoulliGLM (the seed introduction's parameters, Δt = 1 ms) against Brian2 2.9 in C++
  standalone mode: a ``NeuronGroup`` whose input ``g`` is zeroed after each threshold
  (``rand() < σ(g − θ)Δt``), one synaptic pathway per lag τ of the coupling kernel (delay τΔt,
  ``g += r W0 c(τ)``) and one self-synapse pathway per lag of the refractory kernel: exactly
  the spikefit model. Cases (a) 10 × 50 neurons (sparsity 0.5), 100,000 steps; (b) 1,000
  neurons, 5% connected, 20,000 steps; (c) 10,000 neurons, 1% connected, 5,000 steps.
- PoissonGLM (Δt = 0.1 ms, coupling τ_c = 1 ms over T = 50 steps, e^-5 of it cut off)
  against NEST 3 ``pp_psc_delta`` with c₁ = 0 (exponential escape rate c₂ e^{c₃V}, c₂ =
  1000/α e^{βb} Hz, c₃ = β), no dead time, no reset, τ_m = τ_c, delta synapses of weight
  r W0 and delay Δt: case (d) 1,000 neurons, 5% connected, 10,000 steps.

Times: spikefit's ``simulate`` (its setup and 100 equilibration steps included, recorded
steps only counted), best of 3 after a warm-up; Brian2's network run as measured by its
standalone binary, best of 3 runs of the binary (code generation and compilation reported
apart); NEST's ``time_simulate``. Throughput in neuron-steps/s and synaptic events/s
(spikes × out-degree).

Run: ``python experiments/bench_simulators.py`` (``--quick``: steps / 10; ``--cases a b``;
``--threads 2``: spikefit on 2 threads; ``--memory``: the peak resident memory of 10k, 30k
and 100k neurons × 100 synapses for 10,000 steps as events, each in its own process).
Needs ``pip install -e '.[bench]'`` (Brian2 2.9, the newest for Python 3.11, needs numpy <
2.4; nest-simulator is on PyPI); a simulator that is not installed is left out.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from spikefit.datasets import NormalGenerator
from spikefit.models import BernoulliGLM, PoissonGLM
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION

EQUILIBRATION = 100
POISSON = dict(alpha=15.9, beta=10.0, T=50, tau=1.0, dt=0.1, r=0.1, b=-0.2)


@dataclass
class Case:
    name: str
    model: str  # "bernoulli" (anchor Brian2) or "poisson" (anchor NEST)
    n_networks: int
    n_neurons: int
    sparsity: float
    n_steps: int


CASES = {
    "a": Case("a", "bernoulli", 10, 50, 0.5, 100_000),
    "b": Case("b", "bernoulli", 1, 1000, 0.95, 20_000),
    "c": Case("c", "bernoulli", 1, 10_000, 0.99, 5_000),
    "d": Case("d", "poisson", 1, 1000, 0.95, 10_000),
}


def network(case: Case) -> Data:
    """The case's networks as one graph (the batch of its networks)."""
    generator = NormalGenerator(
        case.n_neurons, mean=0, std=5, sparsity=case.sparsity, glorot=True, seed=0
    )
    graphs = generator.generate(case.n_networks)
    return next(iter(DataLoader(graphs, batch_size=case.n_networks)))


def model_of(case: Case):
    return BernoulliGLM(**SEED_INTRODUCTION) if case.model == "bernoulli" else PoissonGLM(**POISSON)


# ------------------------------------------------------------------ the simulators


def run_spikefit(case: Case, data: Data, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = model_of(case)
    model.simulate(data, 20, seed=1, verbose=False)  # warm-up (and the loop's build)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        events = model.simulate(
            data, steps, seed=0, equilibration_steps=EQUILIBRATION, verbose=False, as_events=True
        )
        times.append(time.perf_counter() - start)
    return dict(seconds=min(times), spikes=int(events.counts.sum()))


def run_brian2(case: Case, data: Data, steps: int, folder: str) -> dict:
    import brian2 as b2

    model = model_of(case)
    dt = float(model.dt)
    coupling = (model.recurrence() * model.coupling_kernel()).tolist()
    ref = model.self_kernel().tolist()
    b2.set_device("cpp_standalone", directory=folder, build_on_run=False)
    b2.prefs.devices.cpp_standalone.openmp_threads = 0
    b2.defaultclock.dt = dt * b2.ms
    names = dict(theta=float(model.theta), step=dt)
    group = b2.NeuronGroup(
        data.num_nodes,
        "g : 1",
        threshold="rand() < step / (1 + exp(-(g - theta)))",
        namespace=names,
    )
    group.run_regularly("g = 0", when="thresholds", order=1)  # the input of one step
    pre, post = data.edge_index.numpy()
    lags = [lag for lag, c in enumerate(coupling) if c]
    synapses = b2.Synapses(
        group,
        group,
        "w : 1",
        on_pre={f"p{lag}": f"g_post += w * {coupling[lag]!r}" for lag in lags},
        delay={f"p{lag}": lag * dt * b2.ms for lag in lags},
    )
    synapses.connect(i=pre, j=post)
    synapses.w = data.W0.numpy()
    own = b2.Synapses(
        group,
        group,
        on_pre={f"p{lag}": f"g_post += {value!r}" for lag, value in enumerate(ref) if value},
        delay={f"p{lag}": lag * dt * b2.ms for lag, value in enumerate(ref) if value},
    )
    own.connect(j="i")
    monitor = b2.SpikeMonitor(group)
    b2.run((EQUILIBRATION + steps) * dt * b2.ms)
    start = time.perf_counter()
    b2.device.build(directory=folder, compile=True, run=False)
    compile_seconds = time.perf_counter() - start
    runs, binaries = [], []
    for _ in range(3):  # best of 3, as spikefit's
        start = time.perf_counter()
        b2.device.run(directory=folder, with_output=False, run_args=[])
        binaries.append(time.perf_counter() - start)
        runs.append(b2.device._last_run_time)
    spikes = int((monitor.t / b2.ms >= EQUILIBRATION * dt).sum())
    return dict(seconds=min(runs), binary=min(binaries), compile=compile_seconds, spikes=spikes)


def run_nest(case: Case, data: Data, steps: int) -> dict:
    import nest

    p = POISSON
    nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": p["dt"], "local_num_threads": 1, "rng_seed": 1})
    neurons = nest.Create(
        "pp_psc_delta",
        data.num_nodes,
        params=dict(
            c_1=0.0,
            c_2=1000.0 / p["alpha"] * math.exp(p["beta"] * p["b"]),
            c_3=p["beta"],
            dead_time=0.0,
            with_reset=False,
            tau_m=p["tau"],
            V_m=0.0,
        ),
    )
    first = neurons.tolist()[0]
    pre, post = (data.edge_index.numpy() + first).astype("int64")
    nest.Connect(
        pre,
        post,
        conn_spec="one_to_one",
        syn_spec={
            "weight": p["r"] * data.W0.numpy().astype("float64"),
            "delay": np.full(data.num_edges, p["dt"]),
        },
    )
    recorder = nest.Create("spike_recorder", params={"start": EQUILIBRATION * p["dt"]})
    nest.Connect(neurons, recorder)
    nest.Simulate((EQUILIBRATION + steps) * p["dt"])
    return dict(seconds=nest.GetKernelStatus("time_simulate"), spikes=int(recorder.get("n_events")))


# ------------------------------------------------------------------ processes


def worker(simulator: str, name: str, steps: int, threads: int) -> None:
    """One simulator on one case, its result as JSON on stdout."""
    case = CASES[name]
    data = network(case)
    if simulator == "spikefit":
        result = run_spikefit(case, data, steps, threads)
    elif simulator == "brian2":
        with tempfile.TemporaryDirectory() as folder:
            result = run_brian2(case, data, steps, folder)
    else:
        result = run_nest(case, data, steps)
    print(json.dumps(result))


def in_process(*args: str) -> dict | None:
    """The result of ``--worker`` with ``args`` in a new process (None: not installed or
    failed, with its error on stderr)."""
    command = [sys.executable, __file__, "--worker", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{args[0]} on case {args[1]} failed: {done.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(names: list[str], quick: bool, threads: int) -> None:
    header = (
        f"{'case':5s} {'model':10s} {'neurons':>8s} {'steps':>7s} {'simulator':10s} "
        f"{'time (s)':>9s} {'M n-steps/s':>12s} {'M syn ev/s':>11s} {'rate (Hz)':>10s} "
        f"{'spikefit x':>10s}"
    )
    print(header)
    for name in names:
        case = CASES[name]
        steps = case.n_steps // 10 if quick else case.n_steps
        data = network(case)
        degree = data.num_edges / data.num_nodes
        dt = float(model_of(case).dt)
        anchor = "brian2" if case.model == "bernoulli" else "nest"
        results = {
            "spikefit": in_process("spikefit", name, str(steps), str(threads)),
            anchor: in_process(anchor, name, str(steps), "1"),
        }
        for simulator, result in results.items():
            if result is None:
                continue
            seconds = result["seconds"]
            ratio = seconds / results["spikefit"]["seconds"] if results["spikefit"] else math.nan
            rate = result["spikes"] / (data.num_nodes * steps * dt) * 1000
            extra = (
                f"  (compile {result['compile']:.1f} s, binary {result['binary']:.2f} s)"
                if "compile" in result
                else ""
            )
            print(
                f"{name:5s} {case.model:10s} {data.num_nodes:8d} {steps:7d} {simulator:10s} "
                f"{seconds:9.3f} {data.num_nodes * steps / seconds / 1e6:12.1f} "
                f"{result['spikes'] * degree / seconds / 1e6:11.2f} {rate:10.2f} "
                f"{ratio:10.2f}{extra}"
            )
        if all(results.values()):
            rates = [r["spikes"] for r in results.values()]
            if abs(rates[0] - rates[1]) > 0.1 * max(rates):
                print(f"case {name}: the rates differ by more than 10%", file=sys.stderr)


# ------------------------------------------------------------------ memory


def memory_worker(n: int, steps: int) -> None:
    """Peak resident memory of ``n`` neurons × 100 synapses, ``steps`` steps as events."""
    generator = torch.Generator().manual_seed(0)
    pre = torch.arange(n).repeat_interleave(100)
    post = (pre + torch.randint(1, n, (len(pre),), generator=generator)) % n
    weights = torch.randn(len(pre), generator=generator) * 5 / math.sqrt(100)
    data = Data(edge_index=torch.stack([pre, post]), W0=weights, num_nodes=n)
    start = time.perf_counter()
    events = BernoulliGLM(**SEED_INTRODUCTION).simulate(data, steps, seed=0, as_events=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps(dict(peak_mib=peak, seconds=seconds, spikes=len(events.counts))))


def memory(steps: int) -> None:
    print(f"{'neurons':>8s} {'synapses':>11s} {'spikes':>11s} {'time (s)':>9s} {'peak RSS':>10s}")
    for n in (10_000, 30_000, 100_000):
        command = [sys.executable, __file__, "--memory-worker", str(n), str(steps)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{n:8d} {n * 100:11,d} {result['spikes']:11,d} {result['seconds']:9.1f} "
            f"{result['peak_mib']:7.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="steps / 10")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1, help="spikefit's threads")
    parser.add_argument("--memory", action="store_true", help="peak memory at scale")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        simulator, name, steps, threads = args.worker
        worker(simulator, name, int(steps), int(threads))
    elif args.memory_worker:
        memory_worker(*args.memory_worker)
    elif args.memory:
        memory(1000 if args.quick else 10_000)
    else:
        print(json.dumps({name: asdict(CASES[name]) for name in args.cases}))
        compare(args.cases, args.quick, args.threads)


if __name__ == "__main__":
    main()
