from __future__ import annotations

import errno
import math
import os
from functools import partial
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Data

from spikefit.checks import (
    InputError,
    field_name,
    in_range,
    non_negative,
    number,
    one_of,
    positive,
    random_generator,
    satisfies,
    whole,
)
from spikefit.datasets.graph import dense_to_graph


def _holds(path: Path, matrix: Tensor) -> bool:
    """Whether the file ``path`` holds exactly ``matrix`` (same dtype, shape and values)."""
    try:
        saved = torch.load(path, weights_only=True)
    except Exception:  # unreadable: not the matrix
        return False
    return isinstance(saved, Tensor) and saved.dtype == matrix.dtype and torch.equal(saved, matrix)


def _write(path: Path, matrix: Tensor) -> None:
    """Saves ``matrix`` to ``path`` atomically: to ``path.partial``, then renamed."""
    temporary = path.with_name(path.name + ".partial")
    with temporary.open("wb") as file:  # through a file object, torch names the archive inside
        torch.save(matrix, file)  # "archive", not after the temporary file
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


class ConnectivityGenerator:
    """Base class of random (or structured) connectivity matrices ``W0`` ``[N, N]`` indexed
    ``[pre, post]``. Subclasses implement :meth:`generate_W0`."""

    n_neurons: int

    def generate_W0(self) -> Tensor:
        """One dense float32 weight matrix ``[N, N]``."""
        raise NotImplementedError

    def count(self, name: str, value: int, minimum: int = 1) -> int:
        """The argument ``name`` if it is a whole number ≥ ``minimum``."""
        return whole(field_name(self, name), value, minimum)

    def generate(self, n: int) -> list[Data]:
        """``n`` networks as ``Data(edge_index, W0, num_nodes)``."""
        return [dense_to_graph(self.generate_W0()) for _ in range(self.count("n", n))]

    def save(self, n: int, directory: str | Path) -> Path:
        """Write ``n`` dense matrices to ``directory/0.pt … n-1.pt`` and return the directory.

        All ``n`` are generated first. A file that already holds its matrix is left as it is
        (saving again with the same seed changes nothing); if any file holds something else or
        cannot be read, FileExistsError names the first such file and nothing is written.
        Missing files are written atomically (``i.pt.partial``, then renamed).
        """
        directory = Path(directory)
        files = {directory / f"{i}.pt": self.generate_W0() for i in range(self.count("n", n))}
        clashes = [
            str(path)
            for path, matrix in files.items()
            if path.exists() and not _holds(path, matrix)
        ]
        if clashes:
            more = (
                f", as do {len(clashes) - 1} more of the {len(files)} files"
                if len(clashes) > 1
                else ""
            )
            raise FileExistsError(
                errno.EEXIST,
                f"holds another matrix than this generator's"
                f"{more}; nothing written (remove the differing files or save "
                f"to another directory)",
                clashes[0],
            )
        directory.mkdir(parents=True, exist_ok=True)
        for path, matrix in files.items():
            if not path.exists():
                _write(path, matrix)
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
        seed (int, optional): seed ≥ 0 of a fresh generator, instead of :obj:`rng`.
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
        self.n_neurons = self.count("n_neurons", n_neurons, 2)
        if self.n_neurons % 2:
            raise InputError(
                field_name(self, "n_neurons"),
                f"{self.n_neurons} is odd",
                "an even number: half excitatory, half inhibitory",
            )
        self.mean = number(self, "mean", mean)
        self.std = number(self, "std", std, non_negative)
        self.sparsity = number(
            self,
            "sparsity",
            sparsity,
            partial(
                satisfies,
                test=lambda values: (values >= 0.5) & (values <= 1),
                expected="a fraction in [0.5, 1]: Dale's law already zeroes about half the weights",
            ),
        )
        self.glorot = bool(one_of(field_name(self, "glorot"), glorot, (True, False)))
        self.rng = random_generator(field_name(self, "seed"), rng, seed)

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
        seed (int, optional): seed ≥ 0 of a fresh generator, instead of :obj:`rng`.
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
        self.n_neurons = self.count("n_neurons", n_neurons)
        self.low = number(self, "low", low)
        self.high = number(
            self,
            "high",
            high,
            partial(
                satisfies,
                test=lambda values: values > self.low,
                expected=f"a finite number > low = {self.low:g}",
            ),
        )
        self.sparsity = number(self, "sparsity", sparsity, partial(in_range, low=0, high=1))
        self.rng = random_generator(field_name(self, "seed"), rng, seed)

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
        self.n_neurons = self.count("n_neurons", n_neurons)
        self.a = number(self, "a", a)
        self.sigma_1 = number(self, "sigma_1", sigma_1, positive)
        self.sigma_2 = number(self, "sigma_2", sigma_2, positive)

    def generate_W0(self) -> Tensor:
        n = self.n_neurons
        index = torch.arange(n)
        gap = (index.unsqueeze(1) - index).abs()
        d2 = torch.minimum(gap, n - gap).float() ** 2
        center = torch.exp(-d2 / (2 * self.sigma_1**2))
        surround = torch.exp(-d2 / (2 * self.sigma_2**2))
        return (center - self.a * surround).fill_diagonal_(0)
