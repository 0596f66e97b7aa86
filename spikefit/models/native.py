r"""The compiled block loops of the fast engine, for every declared emission on the CPU.

``history_block`` runs a block of steps of a spike-history model, ``activation_block`` one of a
synaptic-activation model, without returning to Python. They are built from the C++ sources
beside this module (``loop_team.cpp``: the threads; ``loop_emission.cpp``: links and
emissions; ``simulation_loops.cpp``: the loops) with ``torch.utils.cpp_extension.load_inline``
on first use (needs a C++ compiler and ninja; the build is kept in torch's extension directory
and imported directly afterwards). Where they cannot be built, :func:`compiled_loops` warns once
and returns ``None`` and the engine runs its Python loops, which take the same random draws in
the same order and give the same spikes.

A step :math:`s` of a spike-history block, for every neuron-trial :math:`i` (the input buffer
:math:`F` already holds the background and the stimulus): the rate :math:`m_i = f(F_i(s))` of
the emission's link, then the spikes — for Bernoulli emissions by time rescaling,

.. math::
    o_i = \frac{p_i}{1 - p_i}, \qquad D_i \leftarrow \frac{D_i - o_i}{1 + o_i}, \qquad
    X_i(s) = [D_i \le 0]

(a neuron that fires draws a new threshold :math:`D_i = e^{E} - 1` of an Exp(1) draw E, so
that it fires when the hazard :math:`\sum -\log(1 - p)` since its last spike passes E),
Poisson counts likewise with the hazard μ (or drawn by ATen's ``poisson`` on the whole row),
or :math:`X_i = [m_i > \theta_i]` — and their delivery to the
coming inputs:

.. math::
    F_j(s+1+\tau) \mathrel{+}= \sum_b c_b(\tau) \sum_{i} X_i(s)\, w_{ijb}, \qquad
    F_i(s+1+\tau) \mathrel{+}= X_i(s)\,\mathrm{ref}_i(\tau).

A synaptic-activation step: :math:`g = r \sum_j w_{ji} s_j + E`, the spikes of the emission,
:math:`s \leftarrow s (1 - \Delta t/\tau) + X \Delta t`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

#: The C++ sources of the loops, kept beside this module, in the order they are compiled.
SOURCES = ("loop_team.cpp", "loop_emission.cpp", "simulation_loops.cpp")
SOURCE = "\n".join((Path(__file__).parent / name).read_text() for name in SOURCES)
#: The functions the built module provides.
FUNCTIONS = ["history_block", "activation_block"]
#: The compiler flags of ATen's kernels for each CPU capability it dispatches to: the loops'
#: vector code (``at::vec::Vectorized``) is then the code of ATen's kernels here, and fused
#: multiply-adds are in hardware where ATen's kernels use them.
CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "AVX512": [
        *("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"),
        *("-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"),
    ],
}


def build_folder(name: str) -> Path:
    """Where the build of ``name`` is kept: a ``spikefit`` folder in torch's extension
    directory (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions")
    return Path(root) / "spikefit" / name


def import_built(name: str, folder: Path) -> ModuleType | None:
    """The loops from an existing build in ``folder`` (milliseconds, where ``load_inline``
    first imports its builder and runs ninja to check the build, ~0.05 s), or ``None``."""
    path = folder / f"{name}{'.pyd' if sys.platform == 'win32' else '.so'}"
    if not path.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError):  # e.g. a build being written by another process
        return None
    return module


@functools.cache
def compiled_loops() -> ModuleType | None:
    """The compiled loops (built on the first call), or ``None`` with a one-time warning
    when they cannot be built here."""
    # no fused multiply-adds but the explicit ones (as ATen's kernels)
    flags = ["-O3", "-ffp-contract=off"]
    flags += CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])
    # the name changes with the sources, the flags and the versions: a build found under it
    # is the one load_inline would make, and other versions' builds never get in the way
    key = "\n".join([SOURCE, torch.__version__, sys.version, *flags])
    name = f"spikefit_loops_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    folder = build_folder(name)
    module = import_built(name, folder)
    if module is not None:
        return module
    from torch.utils.cpp_extension import load_inline  # slow to import: only to build

    print(
        f"spikefit: compiling the simulation loop into {folder} (once per machine and "
        f"torch version, about a minute)",
        file=sys.stderr,
        flush=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return load_inline(
            name,
            cpp_sources=[SOURCE],
            functions=FUNCTIONS,
            extra_cflags=flags,
            build_directory=str(folder),
        )
    except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as failure:
        warnings.warn(
            f"spikefit: the compiled simulation loop could not be built ({failure}); "
            f"simulating with the slower Python loop",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
