"""A GLM whose post-spike, coupling and covariate filters are learned on bases (for recorded
spikes)."""

from __future__ import annotations

import torch

from spikefit.checks import one_of, positive, whole
from spikefit.models.base_model import BaseModel
from spikefit.models.bases import Basis, RaisedCosineLog
from spikefit.models.emissions import Bernoulli, Poisson
from spikefit.models.links import Exponential, Logistic

#: The emissions a FilterGLM can have, by name.
EMISSIONS = {"bernoulli": lambda: Bernoulli(Logistic()), "poisson": lambda: Poisson(Exponential())}


class FilterGLM(BaseModel):
    r"""Generalised linear model with filters on bases (Pillow et al. 2008, Nature 454).

    .. math::
        g_i(t+1) &= b_i + \sum_\tau h_i(\tau) X_i(t-\tau)
                    + r \sum_j \sum_\tau k_{ji}(\tau) X_j(t-\tau)
                    + \sum_c \sum_\tau f_{ic}(\tau)\, x_c(t - \tau + \delta)
                    + \mathcal{E}_i(t+1) \\
        h_i(\tau) &= \sum_a v_{ia} A_a(\tau), \qquad k_{ji}(\tau) = \sum_b w_{jib} B_b(\tau),
        \qquad f_{ic}(\tau) = \sum_d u_{icd} D_d(\tau)

    with the post-spike filter :math:`h_i` on the self basis A, the coupling filters
    :math:`k_{ji}` on the coupling basis B, whose weights :math:`w_{jib}` are the network's
    ``W0`` [E, K] (or a fit's coupling), and the filters :math:`f_{ic}` of the covariates
    :math:`x_c` (a recording's external regressors, in its bins) on the covariate basis D,
    :math:`\delta = 1` with the current bin (lag 0 is bin t+1 itself), else 0 (lag 0 is bin
    t). The covariate term is fit-only: :meth:`simulate` runs without it. The emission is
    Bernoulli, :math:`p = \sigma(g)\,\Delta t`, or Poisson, :math:`\mu = \Delta t\, e^{g}`
    (so :math:`e^{g}` is a rate in spikes per ms).

    Args:
        dt: step Δt in ms.
        emission: ``"bernoulli"`` or ``"poisson"``.
        window_ms: window of the default bases, in ms.
        n_basis: functions of the default bases (log-stretched raised cosines).
        coupling_basis: the coupling filters' basis (default: the log raised cosines).
        self_basis: the post-spike filters' basis (default: as the coupling basis).
        b: bias (tunable): a scalar, or one value per neuron.
        self_weights: weights :math:`v` of the post-spike filter on its basis (tunable): [A]
            shared, or [N, A] one filter per neuron; default zeros.
        r: recurrence scale of the coupling (tunable).
        n_covariates: covariates C (0: no covariate term).
        covariate_window_ms: window of the default covariate basis, in ms.
        covariate_basis: the covariate filters' basis D (default: ``n_basis`` log raised
            cosines over ``covariate_window_ms``).
        covariate_weights: weights :math:`u` of the covariate filters (tunable): [C·D]
            shared, or [N, C·D] per neuron, column c·D + d; default zeros.
        include_current_bin: whether a covariate's own bin enters the input (lag 0 at δ = 1).
        rng: generator for the draws.
    """

    def __init__(
        self,
        dt: float = 1.0,
        emission: str = "bernoulli",
        window_ms: float = 100.0,
        n_basis: int = 8,
        coupling_basis: Basis | None = None,
        self_basis: Basis | None = None,
        b: float | list[float] = -4.0,
        self_weights: list[float] | list[list[float]] | None = None,
        r: float = 1.0,
        n_covariates: int = 0,
        covariate_window_ms: float = 100.0,
        covariate_basis: Basis | None = None,
        covariate_weights: list[float] | list[list[float]] | None = None,
        include_current_bin: bool = False,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        owner = type(self).__name__
        self.emission = EMISSIONS[one_of(f"{owner}.emission", emission, EMISSIONS)]()
        steps = whole(
            f"{owner}.window_ms",
            round(positive(f"{owner}.window_ms", window_ms) / positive(f"{owner}.dt", dt)),
            1,
        )
        default = RaisedCosineLog(n_basis, steps)
        self.bases = (coupling_basis or default, self_basis or coupling_basis or default)
        window = max(basis.window_steps for basis in self.bases)
        self._register("T", window, dtype=torch.int64)
        self._register("dt", dt, check=positive)
        self._register("theta", 0.0)  # the logistic link's threshold: the bias b stands for it
        self._register("alpha", 1.0)  # the exponential link's μ = Δt/α e^{βg}: e^g per ms
        self._register("beta", 1.0)
        self._register("b", b, tunable=True)
        weights = [0.0] * self.bases[1].n_basis if self_weights is None else self_weights
        self._register("self_weights", weights, tunable=True)
        self._register("r", r, tunable=True)
        self.covariates = whole(f"{owner}.n_covariates", n_covariates, 0)
        self.include_current_bin = bool(include_current_bin)
        covariate_steps = round(positive(f"{owner}.covariate_window_ms", covariate_window_ms) / dt)
        self.covariate_filter_basis = covariate_basis or RaisedCosineLog(
            n_basis, whole(f"{owner}.covariate_window_ms", covariate_steps, 1)
        )
        if self.covariates:
            width = self.covariates * self.covariate_filter_basis.n_basis
            weights = [0.0] * width if covariate_weights is None else covariate_weights
            self._register("covariate_weights", weights, tunable=True)

    def _functions(self, basis: Basis) -> torch.Tensor:
        """``basis`` [K, window] padded with zeros to the model's window T."""
        functions = basis().to(self.dt.device)
        return torch.nn.functional.pad(functions, (0, self.window - functions.shape[1]))

    def coupling_basis(self) -> torch.Tensor:
        return self._functions(self.bases[0])

    def self_basis(self) -> torch.Tensor:
        """The post-spike filters' basis A [A, T], lag order."""
        return self._functions(self.bases[1])

    def self_kernel_weights(self) -> torch.Tensor:
        return self.self_weights

    def self_kernel(self) -> torch.Tensor:
        """:math:`h(\\tau) = \\sum_a v_a A_a(\\tau)`: [T], or [N, T] for weights per neuron."""
        return self.self_weights @ self.self_basis()

    @property
    def memory_steps(self) -> int:
        """Steps of history of the spike filters or, with covariates, of the covariate
        filters, the longer."""
        if not self.covariates:
            return self.window
        return max(self.window, self.covariate_filter_basis.window_steps)

    @property
    def n_covariates(self) -> int:
        return self.covariates

    def covariate_basis(self) -> torch.Tensor:
        """The covariate filters' basis D [D, L], lag order."""
        return self.covariate_filter_basis().to(self.dt.device)

    def covariate_filters(self) -> torch.Tensor | None:
        """:math:`f_{ic}(\\tau) = \\sum_d u_{icd} D_d(\\tau)`: [1, C, L] shared or [N, C, L]."""
        if not self.covariates:
            return None
        basis = self.covariate_basis()
        return self.covariate_weights.view(-1, self.covariates, len(basis)) @ basis

    def covariate_input(self, covariates: torch.Tensor) -> torch.Tensor | None:
        """:math:`\\sum_c \\sum_d u_{icd} (x_c * D_d)(s)` at every step s [K, N, S] ([K, 1, S]
        for shared weights) from the covariates [K, C, S], by the basis filtering of the
        spikes (:meth:`basis_filter`), one step earlier with the current bin; None without
        covariates."""
        if not self.covariates:
            return None
        basis, shift = self.covariate_basis(), int(self.include_current_bin)
        padded = torch.nn.functional.pad(covariates.float(), (0, shift))
        traces = self.basis_filter(padded, basis)[..., shift:]  # row d·C + c
        n_trials, _, steps = traces.shape
        by_basis = traces.view(n_trials, len(basis), self.covariates, steps)
        weights = self.covariate_weights.view(-1, self.covariates, len(basis))
        return torch.einsum("kdcs,ncd->kns", by_basis, weights)
