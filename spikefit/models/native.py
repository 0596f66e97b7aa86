r"""Compiled inner loop of the fast engine for time-rescaled logistic (Bernoulli GLM) models.

The C++ loop runs a whole block of steps without returning to Python, whole trials on each of
``torch.get_num_threads()`` threads on Linux (trials are independent: each has its own Exp(1)
stream). It is built with ``torch.utils.cpp_extension.load_inline`` on first use (needs a C++
compiler and ninja; the build is kept in torch's extension directory and imported directly
afterwards). Where it cannot be built, :func:`logistic_kernel` warns once and returns ``None``
and the engine runs its Python loop, which takes the same random draws in the same order and
gives the same spikes.

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

SOURCE = r"""
#include <algorithm>
#include <vector>

// Runs `length` steps. future [L + T, K*N]: input of the coming steps (rows are zeroed as they
// are read); remaining [K*N]; targets, weights [N, D]: outgoing edges of one trial's neurons
// (weight 0: padding); coupling [S]; ref [T', N] or [T', 1]; theta [N]. Trial k takes its
// Exp(1) draws from pools[k] at positions[k], refilled from generators[k] when a step needs more
// than are left. Trials are independent, so whole trials are handed to threads for the whole
// block. Returns the spikes as sorted keys step*K*N + k*N + i.
at::Tensor logistic_block(
    const at::Tensor& targets, const at::Tensor& weights, const at::Tensor& coupling,
    const at::Tensor& ref, const at::Tensor& theta, double dt,
    std::vector<at::Generator> generators, at::Tensor pools, at::Tensor future,
    at::Tensor remaining, at::Tensor positions, int64_t length) {
  for (const at::Tensor& t : {targets, positions})
    TORCH_CHECK(t.scalar_type() == at::kLong && t.is_contiguous() && t.is_cpu());
  for (const at::Tensor& t : {weights, coupling, ref, theta, pools, future, remaining})
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.is_cpu(),
                "logistic_block: float32 contiguous CPU tensors expected");
  const int64_t n = targets.size(0), degree = targets.size(1);
  const int64_t width = remaining.size(0), trials = width / n;
  const int64_t support = coupling.size(0), window = ref.size(0);
  const int64_t ref_columns = ref.size(1), ref_stride = ref_columns == 1 ? 0 : 1;
  const int64_t pool_size = pools.size(1);
  TORCH_CHECK(trials * n == width && future.size(1) == width && theta.numel() == n &&
              future.size(0) >= length + std::max(support, window) && pool_size >= n &&
              pools.size(0) == trials && positions.numel() == trials &&
              static_cast<int64_t>(generators.size()) == trials);
  float* input = future.data_ptr<float>();
  float* left = remaining.data_ptr<float>();
  const int64_t* target = targets.data_ptr<int64_t>();
  const float* weight = weights.data_ptr<float>();
  const float* c = coupling.data_ptr<float>();
  const float* own = ref.data_ptr<float>();
  const float* th = theta.data_ptr<float>();
  float* pool = pools.data_ptr<float>();
  int64_t* position = positions.data_ptr<int64_t>();
  at::Tensor shifted = at::empty({width}, future.options());
  at::Tensor hazard = at::empty({width}, future.options());
  float* x = shifted.data_ptr<float>();
  const float* h = hazard.data_ptr<float>();
  // for trial k, in [k*N, (k+1)*N): synaptic drive, the neurons it reaches, those that fired
  std::vector<float> drive(width, 0.f);
  std::vector<int64_t> hit(width), fired(width);

  // Step s of trial k after its hazards h: threshold crossings, new thresholds, delivery of
  // the spikes to the input of steps s+1, s+2, ...
  auto step = [&](int64_t s, int64_t k, std::vector<int64_t>& events) {
    const int64_t offset = k * n;
    int64_t* spiked = fired.data() + offset;
    int64_t count = 0;
    for (int64_t i = offset; i < offset + n; ++i) {
      left[i] -= h[i];
      spiked[count] = i;
      count += left[i] <= 0;
    }
    if (count == 0) return;
    if (position[k] + count > pool_size) {
      pools.select(0, k).exponential_(1.0, generators[k]);
      position[k] = 0;
    }
    const float* draw = pool + k * pool_size + position[k];
    position[k] += count;
    for (int64_t f = 0; f < count; ++f) {
      left[spiked[f]] = draw[f];
      events.push_back(s * width + spiked[f]);
    }
    float* sum = drive.data() + offset;
    int64_t* reached = hit.data() + offset;
    int64_t hits = 0;  // (a neuron may be listed twice if its sum returned to 0: harmless)
    for (int64_t f = 0; f < count; ++f) {
      const int64_t row = (spiked[f] - offset) * degree;
      for (int64_t d = row; d < row + degree; ++d) {
        if (weight[d] == 0) continue;
        const int64_t j = target[d];
        if (hits < n) {
          reached[hits] = j;
          hits += sum[j] == 0;
        }
        sum[j] += weight[d];
      }
    }
    float* next = input + (s + 1) * width + offset;
    if (4 * hits < n) {  // few neurons reached: one at a time
      for (int64_t m = 0; m < hits; ++m) {
        const int64_t j = reached[m];
        for (int64_t l = 0; l < support; ++l) next[l * width + j] += c[l] * sum[j];
        sum[j] = 0;
      }
    } else {  // many: whole rows
      for (int64_t l = 0; l < support; ++l) {
        float* row = next + l * width;
        for (int64_t j = 0; j < n; ++j) row[j] += c[l] * sum[j];
      }
      std::fill(sum, sum + n, 0.f);
    }
    for (int64_t f = 0; f < count; ++f) {
      const int64_t i = spiked[f] - offset;
      for (int64_t l = 0; l < window; ++l)
        next[l * width + i] += own[l * ref_columns + i * ref_stride];
    }
  };
  // All steps of trials [begin, end).
  auto run = [&](int64_t begin, int64_t end, std::vector<int64_t>& events) {
    at::Tensor g = shifted.slice(0, begin * n, end * n), out = hazard.slice(0, begin * n, end * n);
    for (int64_t s = 0; s < length; ++s) {
      float* now = input + s * width;
      for (int64_t k = begin; k < end; ++k) {
        for (int64_t i = k * n; i < (k + 1) * n; ++i) {
          x[i] = now[i] - th[i - k * n];
          now[i] = 0;
        }
      }
      if (dt == 1.0) {
        at::softplus_out(out, g, 1, 20);
      } else {
        at::sigmoid_out(out, g);
        out.mul_(-dt);
        at::log1p_out(out, out);
        out.neg_();
      }
      for (int64_t k = begin; k < end; ++k) step(s, k, events);
    }
  };

  // whole trials per thread of ATen's intra-op pool: a trial's block of steps is long work
  // (milliseconds), so even two trials are worth splitting
  std::vector<std::vector<int64_t>> events(at::get_num_threads());
  at::parallel_for(0, trials, 1, [&](int64_t begin, int64_t end) {
    run(begin, end, events[at::get_thread_num()]);
  });
  std::vector<int64_t> keys;
  for (const auto& part : events) {
    keys.insert(keys.end(), part.begin(), part.end());
    std::inplace_merge(keys.begin(), keys.end() - part.size(), keys.end());
  }
  return at::tensor(keys, at::kLong);
}
"""


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

    print(f"spikefit: compiling the simulation loop into {folder} (once per machine and "
          f"torch version, about a minute)", file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    for extra in ([openmp, []] if openmp else [[]]):
        try:
            module = load_inline(name, cpp_sources=[SOURCE], functions=["logistic_block"],
                                 extra_cflags=flags + extra, extra_ldflags=extra,
                                 build_directory=str(folder))
            return module.logistic_block
        except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as error:
            failure = error
    warnings.warn(f"spikefit: the compiled simulation loop could not be built ({failure}); "
                  f"simulating with the slower Python loop", RuntimeWarning, stacklevel=2)
    return None
