"""Poisson GLM (Ocker et al., systematic errors in inferred connectivity, section S.7)."""

from __future__ import annotations

import torch

from spikefit.checks import positive
from spikefit.models.base_model import BaseModel, positive_ms, window_steps
from spikefit.models.emissions import Poisson
from spikefit.models.links import Exponential


class PoissonGLM(BaseModel):
    r"""Poisson generalised linear model with an exponential link.

    .. math::
        g_i(t+1) &= r \sum_{\tau=0}^{T-1} \sum_j (W_0)_{ji} X_j(t-\tau) c(\tau)
                    + b_i + \mathcal{E}_i(t+1) \\
        \mu_i(t+1) &= \frac{\Delta t}{\alpha} e^{\beta g_i(t+1)} \\
        X_i(t+1) &\sim \mathrm{Poisson}(\mu_i(t+1))

    with :math:`c(\tau) = e^{-\tau \Delta t / \tau_c}`, :math:`\tau = 0..T-1`. Spikes are
    integer counts per step.

    Args:
        alpha: rate scale α > 0 (μ = Δt/α · e^{βg}) (tunable).
        beta: gain β of the exponential (tunable).
        T: coupling window, a whole number of steps ≥ 1.
        tau: coupling time constant τ_c > 0 in ms (tunable).
        dt: step Δt > 0 in ms.
        r: recurrence scale (tunable).
        b: background input (tunable).
        rng: generator for the Poisson draws.
    """

    emission = Poisson(Exponential())

    def __init__(
        self,
        alpha: float,
        beta: float,
        T: int,
        tau: float,
        dt: float,
        r: float,
        b: float,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        self._register("T", T, dtype=torch.int64, check=window_steps)
        self._register("dt", dt, check=positive_ms)
        self._register("alpha", alpha, tunable=True, check=positive)
        self._register("beta", beta, tunable=True)
        self._register("tau", tau, tunable=True, check=positive_ms)
        self._register("r", r, tunable=True)
        self._register("b", b, tunable=True)

    def coupling_kernel(self) -> torch.Tensor:
        lag = torch.arange(self.window, device=self.dt.device)
        return torch.exp(-lag * self.dt / self.tau)
