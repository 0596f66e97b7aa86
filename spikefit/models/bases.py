r"""Bases of history filters: K functions of the lag τ = 0 … T−1 steps, [K, T] in lag order.

A filter on a basis is :math:`k(\tau) = \sum_b w_b B_b(\tau)`: a model's coupling kernel per
edge (:meth:`~spikefit.models.BaseModel.coupling_basis`, with weights [E, K]) or a neuron's
own post-spike filter. Lag 0 is the step right before the one whose input it shapes.
"""

from __future__ import annotations

import math

import torch

from spikefit.checks import InputError, positive, whole


class Basis:
    """K functions over a window of T steps.

    Args:
        n_basis: number of functions K.
        window_steps: window T, in steps.
    """

    def __init__(self, n_basis: int, window_steps: int) -> None:
        owner = type(self).__name__
        self.n_basis = whole(f"{owner}.n_basis", n_basis, 1)
        self.window_steps = whole(f"{owner}.window_steps", window_steps, 1, "of steps")

    def __call__(self) -> torch.Tensor:
        """The functions [K, T] (float32), lag order."""
        lag = torch.arange(self.window_steps, dtype=torch.float64)
        return self.evaluate(lag).float()

    def evaluate(self, lag: torch.Tensor) -> torch.Tensor:
        """The functions at the lags ``lag`` [T] (float64) → [K, T]."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_basis={self.n_basis}, window_steps={self.window_steps})"


def raised_cosines(position: torch.Tensor, n_basis: int, width: float) -> torch.Tensor:
    r""":math:`\tfrac12\,(1 + \cos(\pi (u - \phi_b) / (w\Delta)))` where
    :math:`|u - \phi_b| < w\Delta`, else 0, for positions u in [0, 1] [T], peaks
    :math:`\phi_b = b\Delta`, :math:`\Delta = 1/(K-1)` (one function: a single bump peaking
    at 0 and reaching 0 at 1) → [K, T]."""
    spacing = 1.0 / max(n_basis - 1, 1)
    peaks = torch.arange(n_basis, dtype=position.dtype) * spacing
    distance = (position.unsqueeze(0) - peaks.unsqueeze(1)) / (width * spacing)
    return torch.where(distance.abs() < 1, 0.5 * (1 + torch.cos(math.pi * distance)), 0.0)


class RaisedCosineLinear(Basis):
    r"""Raised cosines evenly spaced in the lag: peaks at :math:`\tau_b = b (T-1)/(K-1)`.

    Args:
        n_basis: number of functions K.
        window_steps: window T, in steps.
        width: half-width of each bump in peak spacings (a whole number w: the functions
            sum to w between the first and last peak; Pillow et al. use 2).
    """

    def __init__(self, n_basis: int, window_steps: int, width: float = 2.0) -> None:
        super().__init__(n_basis, window_steps)
        self.width = positive(f"{type(self).__name__}.width", width)

    def evaluate(self, lag: torch.Tensor) -> torch.Tensor:
        return raised_cosines(lag / max(self.window_steps - 1, 1), self.n_basis, self.width)


class RaisedCosineLog(Basis):
    r"""Raised cosines evenly spaced in log-stretched time (Pillow et al. 2008, Nature 454):
    narrow bumps at short lags, broad ones at long lags, peaks evenly spaced in

    .. math::
        u(\tau) = \frac{\log(\tau + c) - \log c}{\log(T - 1 + c) - \log c}.

    Args:
        n_basis: number of functions K.
        window_steps: window T, in steps.
        offset: c, in steps (> 0): the smaller, the stronger the stretch of short lags.
        width: half-width of each bump in peak spacings (a whole number w: the functions
            sum to w between the first and last peak; Pillow et al. use 2).
    """

    def __init__(
        self, n_basis: int, window_steps: int, offset: float = 1.0, width: float = 2.0
    ) -> None:
        super().__init__(n_basis, window_steps)
        owner = type(self).__name__
        self.offset = positive(f"{owner}.offset", offset, "steps")
        self.width = positive(f"{owner}.width", width)

    def evaluate(self, lag: torch.Tensor) -> torch.Tensor:
        c, last = self.offset, max(self.window_steps - 1, 1)
        position = (torch.log(lag + c) - math.log(c)) / (math.log(last + c) - math.log(c))
        return raised_cosines(position, self.n_basis, self.width)


class Exponentials(Basis):
    r"""Decaying exponentials :math:`e^{-\tau / \tau_b}` with time constants in steps.

    Args:
        time_constants: :math:`\tau_b`, in steps (each > 0).
        window_steps: window T, in steps.
    """

    def __init__(self, time_constants: list[float], window_steps: int) -> None:
        if not time_constants:
            raise InputError(
                f"{type(self).__name__}.time_constants",
                "is empty",
                "at least one time constant in steps",
            )
        for k, value in enumerate(time_constants):
            positive(f"{type(self).__name__}.time_constants[{k}]", value, "steps")
        super().__init__(len(time_constants), window_steps)
        self.time_constants = [float(value) for value in time_constants]

    def evaluate(self, lag: torch.Tensor) -> torch.Tensor:
        scales = torch.tensor(self.time_constants, dtype=lag.dtype).unsqueeze(1)
        return torch.exp(-lag.unsqueeze(0) / scales)


class Tabulated(Basis):
    """Functions given by their values, e.g. another toolkit's basis sampled at the lags.

    Args:
        values: [K, T], lag order (column 0: the step right before), each function finite
            and not all zero.
    """

    def __init__(self, values: list[list[float]] | torch.Tensor) -> None:
        owner = type(self).__name__
        table = torch.as_tensor(values, dtype=torch.float64)
        if table.dim() != 2 or table.numel() == 0:
            raise InputError(
                f"{owner}.values",
                f"has shape {list(table.shape)}",
                "[K, T]: K functions of T lags",
            )
        if not torch.isfinite(table).all() or (table == 0).all(1).any():
            raise InputError(
                f"{owner}.values", "holds a non-finite value or a zero function", "finite, nonzero"
            )
        super().__init__(*table.shape)
        self.values = table

    def evaluate(self, lag: torch.Tensor) -> torch.Tensor:
        return self.values[:, lag.long()]
