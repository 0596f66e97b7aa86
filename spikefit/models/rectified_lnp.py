"""Rectified linear-nonlinear-Poisson model (Ocker et al., section S.6)."""

from __future__ import annotations

import torch

from spikefit.checks import non_negative
from spikefit.models.base_model import BaseModel, positive_ms, window_steps
from spikefit.models.emissions import Poisson
from spikefit.models.links import Rectified
from spikefit.models.poisson_glm import PoissonGLM


class RectifiedLNP(BaseModel):
    r"""Linear-nonlinear-Poisson model with a rectified-linear non-linearity.

    .. math::
        g_i(t+1) &= r \sum_{\tau=0}^{T-1} \sum_j (W_0)_{ji} X_j(t-\tau) c(\tau)
                    + b_i + \mathcal{E}_i(t+1) \\
        \mu_i(t+1) &= \lambda_0 \Delta t \, [g_i(t+1) - \theta]_+ \\
        X_i(t+1) &\sim \mathrm{Poisson}(\mu_i(t+1))

    with :math:`c(\tau) = e^{-\tau \Delta t / \tau_c}`, :math:`\tau = 0..T-1`.

    Args:
        lambda_0: response gain λ0 ≥ 0 in spikes/ms per unit input (tunable).
        theta: threshold θ (tunable).
        T: coupling window, a whole number of steps ≥ 1.
        tau: coupling time constant τ_c > 0 in ms (tunable).
        dt: step Δt > 0 in ms.
        r: recurrence scale (tunable).
        b: background input (tunable).
        rng: generator for the Poisson draws.
    """

    emission = Poisson(Rectified())

    def __init__(
        self,
        lambda_0: float,
        theta: float,
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
        self._register("lambda_0", lambda_0, tunable=True, check=non_negative)
        self._register("theta", theta, tunable=True)
        self._register("tau", tau, tunable=True, check=positive_ms)
        self._register("r", r, tunable=True)
        self._register("b", b, tunable=True)

    coupling_kernel = PoissonGLM.coupling_kernel
