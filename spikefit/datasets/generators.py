from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Data

from spikefit.datasets.graph import dense_to_graph


def _generator(rng: torch.Generator | None, seed: int | None) -> torch.Generator:
    if rng is not None and seed is not None:
        raise ValueError("pass either rng or seed, not both")
    if rng is not None:
        return rng
    return torch.Generator() if seed is None else torch.Generator().manual_seed(seed)


def _finite(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class ConnectivityGenerator:
    """Base class of random (or structured) connectivity matrices ``W0`` ``[N, N]`` indexed
    ``[pre, post]``. Subclasses implement :meth:`generate_W0`."""

    n_neurons: int

    def generate_W0(self) -> Tensor:
        """One dense float32 weight matrix ``[N, N]``."""
        raise NotImplementedError

    def generate(self, n: int) -> list[Data]:
        """``n`` networks as ``Data(edge_index, W0, num_nodes)``."""
        return [dense_to_graph(self.generate_W0()) for _ in range(_count("n", n, 1))]

    def save(self, n: int, directory: str | Path) -> Path:
        """Write ``n`` dense matrices to ``directory/0.pt … n-1.pt`` (never overwriting a file)
        and return the directory."""
        directory = Path(directory)
        paths = [directory / f"{i}.pt" for i in range(_count("n", n, 1))]
        existing = [str(path) for path in paths if path.exists()]
        if existing:
            raise FileExistsError(f"refusing to overwrite existing files: {', '.join(existing)}")
        directory.mkdir(parents=True, exist_ok=True)
        for path in paths:
            torch.save(self.generate_W0(), path)
        return directory


class NormalGenerator(ConnectivityGenerator):
    r"""Normal weights obeying Dale's law: neurons ``0 … N/2-1`` are excitatory (only positive
    outgoing weights), neurons ``N/2 … N-1`` inhibitory (only negative outgoing weights).

    .. math::
        W_{ji} = c \, X_{ji} \, [\pm X_{ji} > 0] \, B_{ji}, \quad
        X_{ji} \sim \mathcal{N}(\mu, \sigma^2), \quad
        B_{ji} \sim \mathrm{Bernoulli}\big(2(1 - p)\big), \quad W_{jj} = 0

    with the sign :math:`+` for an excitatory presynaptic neuron :math:`j` and :math:`-` for an
    inhibitory one, and :math:`c = 1/\sqrt{N}` with :obj:`glorot` (else :math:`1`). For
    :math:`\mu = 0` the sign rule removes half of the entries, and :math:`B` the rest, so that a
    fraction :math:`\approx p` of the weights is zero.

    Args:
        n_neurons (int): number of neurons :math:`N` (even, at least 2).
        mean (float): mean :math:`\mu` of the weights before the sign rule.
        std (float): standard deviation :math:`\sigma` (non-negative).
        sparsity (float, optional): fraction :math:`p \in [0.5, 1]` of zero weights.
            (default: :obj:`0.5`)
        glorot (bool, optional): scale the weights by :math:`1/\sqrt{N}`. (default: :obj:`False`)
        rng (torch.Generator, optional): generator of all draws.
        seed (int, optional): seed of a fresh generator, used when :obj:`rng` is not given.
    """

    def __init__(
        self,
        n_neurons: int,
        mean: float,
        std: float,
        sparsity: float = 0.5,
        glorot: bool = False,
        rng: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_neurons = _count("n_neurons", n_neurons, 2)
        if self.n_neurons % 2:
            raise ValueError(
                f"n_neurons must be even (half excitatory, half inhibitory), got {n_neurons}"
            )
        self.mean = _finite("mean", mean)
        self.std = _finite("std", std)
        if self.std < 0:
            raise ValueError(f"std must be non-negative, got {std}")
        self.sparsity = _finite("sparsity", sparsity)
        if not 0.5 <= self.sparsity <= 1:
            raise ValueError(
                f"sparsity must be in [0.5, 1], got {sparsity}: Dale's law already zeroes "
                "about half of the weights"
            )
        self.glorot = bool(glorot)
        self.rng = _generator(rng, seed)

    def generate_W0(self) -> Tensor:
        n = self.n_neurons
        W0 = torch.normal(self.mean, self.std, (n, n), generator=self.rng)
        if self.glorot:
            W0 = W0 / math.sqrt(n)
        excitatory = (torch.arange(n) < n // 2).unsqueeze(1)
        W0 = torch.where(excitatory, W0.clamp(min=0), W0.clamp(max=0))
        keep = torch.rand((n, n), generator=self.rng) < 2 * (1 - self.sparsity)
        return torch.where(keep, W0, 0.0).fill_diagonal_(0)


class UniformGenerator(ConnectivityGenerator):
    r"""Uniform weights, each kept with probability :math:`1 - p`.

    .. math::
        W_{ji} = U_{ji} B_{ji}, \quad U_{ji} \sim \mathcal{U}[a, b), \quad
        B_{ji} \sim \mathrm{Bernoulli}(1 - p), \quad W_{jj} = 0

    Args:
        n_neurons (int): number of neurons :math:`N`.
        low (float): lower bound :math:`a`.
        high (float): upper bound :math:`b > a`.
        sparsity (float): probability :math:`p \in [0, 1]` that a weight is zero.
        rng (torch.Generator, optional): generator of all draws.
        seed (int, optional): seed of a fresh generator, used when :obj:`rng` is not given.
    """

    def __init__(
        self,
        n_neurons: int,
        low: float,
        high: float,
        sparsity: float,
        rng: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_neurons = _count("n_neurons", n_neurons, 1)
        self.low = _finite("low", low)
        self.high = _finite("high", high)
        if self.low >= self.high:
            raise ValueError(f"low must be below high, got low={low}, high={high}")
        self.sparsity = _finite("sparsity", sparsity)
        if not 0 <= self.sparsity <= 1:
            raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
        self.rng = _generator(rng, seed)

    def generate_W0(self) -> Tensor:
        n = self.n_neurons
        W0 = self.low + (self.high - self.low) * torch.rand((n, n), generator=self.rng)
        keep = torch.rand((n, n), generator=self.rng) >= self.sparsity
        return torch.where(keep, W0, 0.0).fill_diagonal_(0)


class MexicanHatGenerator(ConnectivityGenerator):
    r"""Deterministic ring network with a Mexican-hat (difference of Gaussians) profile.

    .. math::
        W_{ji} = e^{-d_{ji}^2 / 2\sigma_1^2} - a \, e^{-d_{ji}^2 / 2\sigma_2^2}, \quad
        d_{ji} = \min(|i - j|, N - |i - j|), \quad W_{jj} = 0

    Args:
        n_neurons (int): number of neurons :math:`N` on the ring.
        a (float): weight :math:`a` of the second Gaussian.
        sigma_1 (float): width :math:`\sigma_1` in neurons (positive).
        sigma_2 (float): width :math:`\sigma_2` in neurons (positive).
    """

    def __init__(self, n_neurons: int, a: float, sigma_1: float, sigma_2: float) -> None:
        self.n_neurons = _count("n_neurons", n_neurons, 1)
        self.a = _finite("a", a)
        self.sigma_1 = _finite("sigma_1", sigma_1)
        self.sigma_2 = _finite("sigma_2", sigma_2)
        if self.sigma_1 <= 0 or self.sigma_2 <= 0:
            raise ValueError(f"sigma_1 and sigma_2 must be positive, got {sigma_1}, {sigma_2}")

    def generate_W0(self) -> Tensor:
        n = self.n_neurons
        index = torch.arange(n)
        gap = (index.unsqueeze(1) - index).abs()
        d2 = torch.minimum(gap, n - gap).float() ** 2
        center = torch.exp(-d2 / (2 * self.sigma_1**2))
        surround = torch.exp(-d2 / (2 * self.sigma_2**2))
        return (center - self.a * surround).fill_diagonal_(0)
