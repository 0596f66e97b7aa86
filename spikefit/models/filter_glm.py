"""A GLM whose post-spike and coupling filters are learned on bases (for recorded spikes)."""

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
                    + r \sum_j \sum_\tau k_{ji}(\tau) X_j(t-\tau) + \mathcal{E}_i(t+1) \\
        h_i(\tau) &= \sum_a v_{ia} A_a(\tau), \qquad k_{ji}(\tau) = \sum_b w_{jib} B_b(\tau)

    with the post-spike filter :math:`h_i` on the self basis A and the coupling filters
    :math:`k_{ji}` on the coupling basis B, whose weights :math:`w_{jib}` are the network's
    ``W0`` [E, K] (or a fit's coupling). The emission is Bernoulli,
    :math:`p = \sigma(g)\,\Delta t`, or Poisson, :math:`\mu = \Delta t\, e^{g}` (so
    :math:`e^{g}` is a rate in spikes per ms).

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
