"""Bernoulli GLM with refractoriness (Lepperød et al., causal connectivity from optogenetics)."""

from __future__ import annotations

from functools import partial

import torch

from spikefit.checks import InputError, field_name, satisfies
from spikefit.models.base_model import BaseModel, whole_steps
from spikefit.models.emissions import Bernoulli
from spikefit.models.links import Logistic

#: The parameters of the seed simulator's introductory example.
SEED_INTRODUCTION = dict(
    alpha=0.2,
    beta=0.5,
    abs_ref_scale=3,
    rel_ref_scale=7,
    abs_ref_strength=-100,
    rel_ref_strength=-30,
    coupling_window=5,
    theta=5,
    r=1,
    dt=1,
)


class BernoulliGLM(BaseModel):
    r"""Bernoulli generalised linear model with a logistic link.

    .. math::
        g_i(t+1) &= \sum_{\tau=0}^{T-1} \mathrm{ref}(\tau) X_i(t-\tau)
                    + r \sum_{\tau=0}^{T-1} \sum_j (W_0)_{ji} X_j(t-\tau) c(\tau)
                    + \mathcal{E}_i(t+1) \\
        p_i(t+1) &= \sigma(g_i(t+1) - \theta) \, \Delta t \\
        X_i(t+1) &\sim \mathrm{Bernoulli}(p_i(t+1))

    with the coupling kernel :math:`c(\tau) = e^{-|\alpha| \Delta t \tau}` for
    :math:`\tau < c_w` (else 0) and the refractory kernel
    :math:`\mathrm{ref}(\tau) = a` for :math:`\tau < A`,
    :math:`\rho \, e^{-|\beta| (\tau - A) \Delta t}` for :math:`A \le \tau < A + R`, 0 after.
    r scales the coupling only, never the refractory term. T = max(c_w, A + R).

    Args:
        theta: threshold θ (tunable).
        dt: step Δt in (0, 1] ms, which keeps p ≤ 1.
        coupling_window: c_w, a whole number of steps ≥ 0.
        alpha: coupling decay rate α in 1/ms (tunable; its sign is ignored).
        abs_ref_scale: absolute refractory period A, a whole number of steps ≥ 0.
        abs_ref_strength: input a during the absolute refractory period.
        rel_ref_scale: relative refractory period R, a whole number of steps ≥ 0
            (c_w or A + R ≥ 1).
        rel_ref_strength: initial input ρ of the relative refractory period (tunable).
        beta: refractory decay rate β in 1/ms (tunable; its sign is ignored).
        r: recurrence scale (tunable).
        rng: generator for the Bernoulli draws.
    """

    emission = Bernoulli(Logistic())

    def __init__(
        self,
        theta: float,
        dt: float,
        coupling_window: int,
        alpha: float,
        abs_ref_scale: int,
        abs_ref_strength: float,
        rel_ref_scale: int,
        rel_ref_strength: float,
        beta: float,
        r: float,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        self._register(
            "dt",
            dt,
            check=partial(
                satisfies,
                test=lambda values: (values > 0) & (values <= 1),
                expected="a step in (0, 1] ms, so that p = sigmoid(g - theta)·dt ≤ 1",
            ),
        )
        self._register("coupling_window", coupling_window, dtype=torch.int64, check=whole_steps)
        self._register("abs_ref_scale", abs_ref_scale, dtype=torch.int64, check=whole_steps)
        self._register("rel_ref_scale", rel_ref_scale, dtype=torch.int64, check=whole_steps)
        window = int(max(self.coupling_window, self.abs_ref_scale + self.rel_ref_scale))
        if window < 1:
            raise InputError(
                field_name(self, "coupling_window"),
                "0 and no refractory period (abs_ref_scale + rel_ref_scale = 0) "
                "leave an empty history window",
                "coupling_window ≥ 1 or abs_ref_scale + rel_ref_scale ≥ 1",
            )
        self._register("T", window, dtype=torch.int64)
        self._register("abs_ref_strength", abs_ref_strength)
        self._register("theta", theta, tunable=True)
        self._register("r", r, tunable=True)
        self._register("alpha", alpha, tunable=True)
        self._register("beta", beta, tunable=True)
        self._register("rel_ref_strength", rel_ref_strength, tunable=True)

    def coupling_kernel(self) -> torch.Tensor:
        lag = torch.arange(self.window, device=self.dt.device)
        return torch.exp(-self.alpha.abs() * self.dt * lag) * (lag < self.coupling_window)

    def self_kernel(self) -> torch.Tensor:
        lag = torch.arange(self.window, device=self.dt.device)
        A, R = self.abs_ref_scale, self.rel_ref_scale
        relative = self.rel_ref_strength.unsqueeze(-1) * torch.exp(
            -self.beta.abs().unsqueeze(-1) * (lag - A) * self.dt
        )
        return torch.where(lag < A, self.abs_ref_strength, relative * (lag < A + R))

    def input(
        self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor, t: int = -1
    ) -> torch.Tensor:
        r""":math:`g_i(t+1)` from the state window [N, T] and the filter ``W`` [E', T]."""
        return self.coupled_input(edge_index, W, state) + self.stimulus_input(t)
