"""Rectified linear-nonlinear-Poisson model (Ocker et al., section S.6)."""

from __future__ import annotations

import torch

from spikefit.models.base_model import BaseModel
from spikefit.models.poisson_glm import check_window_and_step


class RectifiedLNP(BaseModel):
    r"""Linear-nonlinear-Poisson model with a rectified-linear non-linearity.

    .. math::
        g_i(t+1) &= r \sum_{\tau=0}^{T-1} \sum_j (W_0)_{ji} X_j(t-\tau) c(\tau)
                    + b_i + \mathcal{E}_i(t+1) \\
        \mu_i(t+1) &= \lambda_0 \Delta t \, [g_i(t+1) - \theta]_+ \\
        X_i(t+1) &\sim \mathrm{Poisson}(\mu_i(t+1))

    with :math:`c(\tau) = e^{-\tau \Delta t / \tau_c}`, :math:`\tau = 0..T-1`.

    Args:
        lambda_0: response gain λ0 in spikes/ms per unit input (tunable).
        theta: threshold θ (tunable).
        T: coupling window, in steps.
        tau: coupling time constant τ_c in ms (tunable).
        dt: step Δt in ms.
        r: recurrence scale (tunable).
        b: background input (tunable).
        rng: generator for the Poisson draws.
    """

    def __init__(self, lambda_0: float, theta: float, T: int, tau: float, dt: float, r: float,
                 b: float, rng: torch.Generator | None = None) -> None:
        super().__init__(rng)
        check_window_and_step("RectifiedLNP", T, dt)
        self._register("T", T, dtype=torch.int64)
        self._register("dt", dt)
        self._register("lambda_0", lambda_0, tunable=True)
        self._register("theta", theta, tunable=True)
        self._register("tau", tau, tunable=True)
        self._register("r", r, tunable=True)
        self._register("b", b, tunable=True)

    def coupling_kernel(self) -> torch.Tensor:
        lag = torch.arange(self.window, device=self.dt.device)
        return torch.exp(-lag * self.dt / self.tau)

    def input(self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor,
              t: int = -1) -> torch.Tensor:
        r""":math:`g_i(t+1)` from the state window [N, T] and the filter ``W`` [E, T]."""
        return self.r * self.synaptic_input(edge_index, W, state) + self.b + self.stimulus_input(t)

    def non_linearity(self, input: torch.Tensor) -> torch.Tensor:
        r""":math:`\mu = \lambda_0 \Delta t [g - \theta]_+` (expected count per step)."""
        return self.lambda_0 * torch.relu(input - self.theta) * self.dt

    def emit_spikes(self, rates: torch.Tensor) -> torch.Tensor:
        r""":math:`X \sim \mathrm{Poisson}(\mu)` (integer counts as floats)."""
        return torch.poisson(rates, generator=self._rng)
