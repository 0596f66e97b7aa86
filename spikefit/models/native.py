r"""Compiled inner loop of the fast engine for time-rescaled logistic (Bernoulli GLM) models.

The C++ loop runs a whole block of steps without returning to Python, whole trials on each of
``torch.get_num_threads()`` threads on Linux (trials are independent: each has its own Exp(1)
stream). It is built from ``logistic_block.cpp`` (beside this module) with
``torch.utils.cpp_extension.load_inline`` on first use (needs a C++ compiler and ninja; the
build is kept in torch's extension directory and imported directly afterwards). Where it
cannot be built, :func:`logistic_kernel` warns once and returns ``None`` and the engine runs
its Python loop, which takes the same random draws in the same order and gives the same
spikes.

A step :math:`s` of the block, for every neuron-trial :math:`i` (the input buffer :math:`F`
already holds the background and the stimulus):

.. math::
    R_i \mathrel{-}= h(F_i(s) - \theta_i), \qquad X_i(s) = [R_i \le 0],

with the hazard :math:`h(x) = -\log(1 - \sigma(x)\,\Delta t)` (:math:`\mathrm{softplus}(x)`
for :math:`\Delta t = 1`, evaluated by ATen's vectorised kernels); a neuron that fires draws a
new Exp(1) threshold :math:`R_i`, then its spikes are delivered to the coming inputs:

.. math::
    F_j(s+1+\tau) \mathrel{+}= r\,c(\tau) \sum_{i \,\mathrm{fired}} (W_0)_{ij}, \qquad
    F_i(s+1+\tau) \mathrel{+}= \mathrm{ref}_i(\tau).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

#: The C++ source of the block loop, kept beside this module.
SOURCE = (Path(__file__).parent / "logistic_block.cpp").read_text()


def build_folder(name: str) -> Path:
    """Where the build of ``name`` is kept: a ``spikefit`` folder in torch's extension
    directory (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions")
    return Path(root) / "spikefit" / name


def import_built(name: str, folder: Path) -> Callable | None:
    """The loop from an existing build in ``folder`` (milliseconds, where ``load_inline``
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
    return module.logistic_block


@functools.cache
def logistic_kernel() -> Callable | None:
    """The compiled block loop (built on the first call), or ``None`` with a one-time warning
    when it cannot be built here."""
    flags = ["-O3", "-ffp-contract=off"]  # no fused multiply-adds, like ATen's x86 kernels
    # with OpenMP (Linux), at::parallel_for runs on ATen's own OpenMP threads; without (other
    # platforms, or a compiler without OpenMP) the trials run one after the other
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # the name changes with the source, the flags and the versions: a build found under it is
    # the one load_inline would make, and other versions' builds never get in the way
    key = "\n".join([SOURCE, torch.__version__, sys.version, *flags, *openmp])
    name = f"spikefit_logistic_block_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    folder = build_folder(name)
    kernel = import_built(name, folder)
    if kernel is not None:
        return kernel
    from torch.utils.cpp_extension import load_inline  # slow to import: only to build

    print(
        f"spikefit: compiling the simulation loop into {folder} (once per machine and "
        f"torch version, about a minute)",
        file=sys.stderr,
        flush=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for extra in [openmp, []] if openmp else [[]]:
        try:
            module = load_inline(
                name,
                cpp_sources=[SOURCE],
                functions=["logistic_block"],
                extra_cflags=flags + extra,
                extra_ldflags=extra,
                build_directory=str(folder),
            )
            return module.logistic_block
        except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as error:
            failure = error
    warnings.warn(
        f"spikefit: the compiled simulation loop could not be built ({failure}); "
        f"simulating with the slower Python loop",
        RuntimeWarning,
        stacklevel=2,
    )
    return None
