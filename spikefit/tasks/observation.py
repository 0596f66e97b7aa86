"""Observation models: the log-probability of recorded spike counts given the model's rate."""

from __future__ import annotations

import torch

from spikefit.checks import InputError, in_range
from spikefit.models import BaseModel
from spikefit.models.emissions import Bernoulli, Poisson


def at_spikes(spikes: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nonzero spike counts of ``spikes`` [S, N] (dense, or sparse COO to skip the search
    for them) and the entries of ``values`` [S, N] at the same places."""
    if spikes.is_sparse:
        index = spikes.indices()
        return spikes.values(), values[index[0], index[1]]
    fired = spikes > 0
    return spikes[fired], values[fired]


class Observations:
    """Emission distribution of spike counts X given the expected count (or probability)
    per step that the model's non-linearity returns.

    Args:
        floor: smallest rate (or probability) used in a logarithm, so that a spike where the
            model predicts none costs log(floor) instead of -inf.
    """

    name = ""

    def __init__(self, floor: float = 1e-8) -> None:
        self.floor = in_range(f"{type(self).__name__}.floor", floor, 0, 1, low_open=True,
                              high_open=True)

    def log_likelihood(self, spikes: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """Total log P(X | rate) over all elements of ``spikes`` [S, N] (dense or sparse COO)
        and ``rate`` [S, N] (nats)."""
        raise NotImplementedError

    def link(self, model: BaseModel, input: torch.Tensor) -> torch.Tensor:
        """The model's output m(g) elementwise that this distribution is parametrised by
        (default: the non-linearity, the rate or probability per step)."""
        return model.non_linearity(input)

    def log_likelihood_of_link(self, spikes: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        """Total log-likelihood given the :meth:`link` output (default: it is the rate)."""
        return self.log_likelihood(spikes, link)

    def model_log_likelihood(self, model: BaseModel, spikes: torch.Tensor,
                             input: torch.Tensor) -> torch.Tensor:
        """Total log-likelihood of ``spikes`` given the model's ``input`` g."""
        return self.log_likelihood_of_link(spikes, self.link(model, input))

    def spike_link_derivatives(self, counts: torch.Tensor, link: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""First and second derivatives of :math:`\log P(X \mid m)` in the :meth:`link`
        output m at bins with ``counts`` > 0 spikes (``link``: m at those bins), from which
        the fits take their gradients (and Newton its curvature). Both built-in
        distributions have :math:`\log P(0 \mid m) = -m`, so where no spike was recorded
        the derivatives are -1 and 0."""
        raise NotImplementedError

    def check(self, spikes: torch.Tensor, field: str) -> None:
        """Raises an InputError naming ``field`` (the recording) if ``spikes`` cannot come
        from this distribution."""


class BernoulliObservations(Observations):
    r"""At most one spike per step. With the hazard :math:`h = -\log(1 - p)`,

    .. math::
        \log P = X \log(1 - e^{-h}) - (1 - X)\,h

    summed as :math:`-\sum h + \sum_{X=1} [h + \log(1 - e^{-h})]`, so the logarithm is taken
    at the spikes only; models with a :meth:`~spikefit.models.BaseModel.hazard` (BernoulliGLM:
    :math:`h = \mathrm{softplus}(g - \theta)` for Δt = 1) give it without rounding p.
    """

    name = "bernoulli"

    def log_likelihood(self, spikes: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        most = 1 - torch.finfo(rate.dtype).eps
        return self.log_likelihood_of_link(spikes, -torch.log1p(-rate.clamp(max=most)))

    def link(self, model: BaseModel, input: torch.Tensor) -> torch.Tensor:
        r"""The hazard h: its Bernoulli emission's, or :math:`-\log(1 - p)` of its
        non-linearity."""
        emission = model.effective_emission
        if isinstance(emission, Bernoulli):
            return emission.hazard(model, input)
        return -torch.log1p(-model.non_linearity(input).clamp(max=1 - self.floor))

    def log_likelihood_of_link(self, spikes: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        """Total log-likelihood from the hazard h [same shape as ``spikes``]."""
        _, fired = at_spikes(spikes, link)
        spike_terms = torch.log(-torch.expm1(-fired.clamp(min=self.floor))) + fired
        return spike_terms.sum() - link.sum()

    def spike_link_derivatives(self, counts: torch.Tensor, link: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\partial_h \log P(1 \mid h) = 1/(e^h - 1)` and
        :math:`\partial_h^2 \log P(1 \mid h) = -e^h/(e^h - 1)^2`."""
        h = link.clamp(min=self.floor)
        excess = torch.expm1(h)
        return 1 / excess, -1 / (excess * -torch.expm1(-h))

    def check(self, spikes: torch.Tensor, field: str) -> None:
        most = float(spikes.max())
        if most > 1:
            raise InputError(field, f"the recording holds up to {most:g} spikes in one bin, "
                             "more than a Bernoulli observation allows", "at most 1 spike per "
                             "bin: bin at a finer dt_ms or fit a Poisson model")


class PoissonObservations(Observations):
    r"""Spike counts: :math:`\log P = X \log\mu - \mu - \log X!`, with the logarithm taken
    at the spikes only and :math:`\mu \ge \mathrm{floor}` there."""

    name = "poisson"

    def log_likelihood(self, spikes: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        counts, fired = at_spikes(spikes, rate)
        spike_terms = counts * torch.log(fired.clamp(min=self.floor))
        return spike_terms.sum() - rate.sum() - torch.lgamma(counts + 1).sum()

    def spike_link_derivatives(self, counts: torch.Tensor, link: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\partial_\mu \log P = X/\mu - 1` and
        :math:`\partial_\mu^2 \log P = -X/\mu^2`."""
        rate = link.clamp(min=self.floor)
        return counts / rate - 1, -counts / rate.square()


def observations_of(model: BaseModel, field: str) -> Observations:
    """The observation model matching ``model``'s spike emission: Bernoulli for BernoulliGLM,
    Poisson for the Poisson emitters (PoissonGLM, RectifiedLNP, RectifiedSAM).

    Raises an InputError naming ``field`` (the model) for a model whose emission has no
    likelihood (ThresholdSAM) or is not a built-in one (then pass the observation model
    explicitly).
    """
    emission = model.effective_emission
    if isinstance(emission, Bernoulli):
        return BernoulliObservations()
    if isinstance(emission, Poisson):
        return PoissonObservations()
    raise InputError(
        field, f"{type(model).__name__} has no likelihood spikefit knows (its emit_spikes is "
        f"neither the Bernoulli of BernoulliGLM nor the Poisson of PoissonGLM, RectifiedLNP "
        f"and RectifiedSAM; ThresholdSAM's threshold emission is deterministic)",
        "one of those models, or observation: BernoulliObservations or PoissonObservations")
