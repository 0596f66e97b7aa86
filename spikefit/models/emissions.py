r"""Emissions: how a model's input becomes spikes, and the likelihood of recorded ones.

An emission owns the inverse link (:mod:`spikefit.models.links`), the draw of spikes, the
hazard of binary emissions, and the log-likelihood of spike counts with its derivatives, so
that simulation, calibration and fits use one object and cannot drift apart (as nemos'
observation models). A model declares its emission as the class attribute ``emission``.

The log-likelihood is written in the emission's likelihood parameter m (:meth:`Emission.link`):
the rate μ for Poisson, the hazard :math:`h = -\log(1 - p)` for Bernoulli. Both have
:math:`\log P(0 \mid m) = -m`, so a recording's log-likelihood is :math:`-\sum m` plus terms at
its spikes only.
"""

from __future__ import annotations

import torch

from spikefit.checks import InputError, in_range
from spikefit.models.links import Link, Logistic


def below_one(probability: torch.Tensor) -> torch.Tensor:
    """``probability`` clamped to 1 - ε of its float type, so that log(1 - p) and p / (1 - p)
    stay finite."""
    return probability.clamp(max=1 - torch.finfo(probability.dtype).eps)


def at_spikes(spikes: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nonzero spike counts of ``spikes`` [S, N] (dense, or sparse COO to skip the search
    for them) and the entries of ``values`` [S, N] at the same places."""
    if spikes.is_sparse:
        index = spikes.indices()
        return spikes.values(), values[index[0], index[1]]
    fired = spikes > 0
    return spikes[fired], values[fired]


class Emission:
    """A spike-count distribution given the expected count or probability per step.

    Args:
        link: the inverse link from the input g to the expected count or probability;
            ``None`` takes the model's own ``non_linearity``.
        floor: smallest rate (or hazard) used in a logarithm, so that a spike where the
            model predicts none costs log(floor) instead of -inf.
    """

    name = ""
    #: Whether :meth:`log_likelihood` exists (a deterministic emission has none).
    has_likelihood = True

    def __init__(self, link: Link | None = None, floor: float = 1e-8) -> None:
        self.inverse_link = link
        self.floor = in_range(
            f"{type(self).__name__}.floor", floor, 0, 1, low_open=True, high_open=True
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inverse_link!r})"

    def with_link(self, link: Link | None) -> Emission:
        """The same distribution with another link (``None``: the model's non-linearity)."""
        return type(self)(link, self.floor)

    def rates(self, model, input: torch.Tensor) -> torch.Tensor:
        """Expected count (or probability) per step of ``input`` g."""
        if self.inverse_link is None:
            return model.non_linearity(input)
        return self.inverse_link(model, input)

    def sample(self, model, rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Spike counts (floats) drawn given ``rates``."""
        raise NotImplementedError

    def mean(self, model, rates: torch.Tensor) -> torch.Tensor:
        """The expected spike count per step given ``rates`` (default: the rate itself, the
        probability or the mean count)."""
        return rates

    def link(self, model, input: torch.Tensor) -> torch.Tensor:
        """The likelihood parameter m of ``input`` (default: the rate)."""
        return self.rates(model, input)

    def log_likelihood(self, spikes: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """Total log P(X | rate) over ``spikes`` [S, N] (dense or sparse COO) and the
        expected counts or probabilities ``rate`` [S, N] (nats)."""
        return self.log_likelihood_of_link(spikes, rate)

    def log_likelihood_of_link(self, spikes: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        """Total log P(X | m) given the likelihood parameter m = :meth:`link` [S, N]."""
        raise NotImplementedError

    def model_log_likelihood(
        self, model, spikes: torch.Tensor, input: torch.Tensor
    ) -> torch.Tensor:
        """Total log-likelihood of ``spikes`` given the model's ``input`` g."""
        return self.log_likelihood_of_link(spikes, self.link(model, input))

    def spike_link_derivatives(
        self, counts: torch.Tensor, link: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""First and second derivatives of :math:`\log P(X \mid m)` in m at the bins with
        ``counts`` > 0 spikes (``link``: m there); elsewhere they are -1 and 0."""
        raise NotImplementedError

    def check(self, spikes: torch.Tensor, field: str) -> None:
        """Raises an InputError naming ``field`` (the recording) if ``spikes`` cannot come
        from this distribution."""


class Bernoulli(Emission):
    r"""At most one spike per step, with probability p.

    Its likelihood parameter is the hazard :math:`h = -\log(1 - p)`:

    .. math::
        \log P = X \log(1 - e^{-h}) - (1 - X)\,h,

    summed as :math:`-\sum h + \sum_{X=1} [h + \log(1 - e^{-h})]`. The fast engine samples by
    time rescaling: a neuron fires when the hazard it accumulated since its last spike passes
    an Exp(1) draw E, exactly Bernoulli(p) per step, computed with the odds o = p / (1 - p):
    it fires when :math:`\prod (1 + o) \ge e^E`.
    """

    name = "bernoulli"

    def sample(self, model, rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.bernoulli(rates, generator=generator)

    def hazard(self, model, input: torch.Tensor) -> torch.Tensor:
        r"""Hazard :math:`h = -\log(1 - p)` of firing in a step: the link's own where it has
        one (the logistic link's needs no rounding of p)."""
        if isinstance(self.inverse_link, Logistic):
            return self.inverse_link.hazard(model, input)
        return -torch.log1p(-below_one(self.rates(model, input)))

    def odds(self, model, input: torch.Tensor) -> torch.Tensor:
        """Odds p / (1 - p) of firing in a step, what time rescaling spends: the logistic
        link's own where it has them (they need no rounding of p), else of p clamped below 1."""
        if isinstance(self.inverse_link, Logistic):
            odds = self.inverse_link.odds(model, input)
            if odds is not None:
                return odds
        rates = below_one(self.rates(model, input))
        return rates / (1 - rates)

    def link(self, model, input: torch.Tensor) -> torch.Tensor:
        return self.hazard(model, input)

    def log_likelihood(self, spikes: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        return self.log_likelihood_of_link(spikes, -torch.log1p(-below_one(rate)))

    def log_likelihood_of_link(self, spikes: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        _, fired = at_spikes(spikes, link)
        spike_terms = torch.log(-torch.expm1(-fired.clamp(min=self.floor))) + fired
        return spike_terms.sum() - link.sum()

    def spike_link_derivatives(
        self, counts: torch.Tensor, link: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\partial_h \log P(1 \mid h) = 1/(e^h - 1)` and
        :math:`\partial_h^2 \log P(1 \mid h) = -e^h/(e^h - 1)^2`."""
        h = link.clamp(min=self.floor)
        excess = torch.expm1(h)
        return 1 / excess, -1 / (excess * -torch.expm1(-h))

    def check(self, spikes: torch.Tensor, field: str) -> None:
        most = float(spikes.max())
        if most > 1:
            raise InputError(
                field,
                f"the recording holds up to {most:g} spikes in one bin, "
                "more than a Bernoulli observation allows",
                "at most 1 spike per bin: clip_counts 1 (clips those bins and says how many), "
                "a finer dt_ms, or a Poisson model",
            )


class Poisson(Emission):
    r"""Integer counts: :math:`\log P = X \log\mu - \mu - \log X!`, the logarithm taken at the
    spikes only and :math:`\mu \ge \mathrm{floor}` there."""

    name = "poisson"

    def sample(self, model, rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.poisson(rates, generator=generator)

    def log_likelihood_of_link(self, spikes: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        counts, fired = at_spikes(spikes, link)
        spike_terms = counts * torch.log(fired.clamp(min=self.floor))
        return spike_terms.sum() - link.sum() - torch.lgamma(counts + 1).sum()

    def spike_link_derivatives(
        self, counts: torch.Tensor, link: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\partial_\mu \log P = X/\mu - 1` and
        :math:`\partial_\mu^2 \log P = -X/\mu^2`."""
        rate = link.clamp(min=self.floor)
        return counts / rate - 1, -counts / rate.square()


class Threshold(Emission):
    r"""A spike where the input crosses the model's threshold: :math:`X = [g > \theta]`.
    Deterministic given the input, so it has no likelihood (noise enters through the input)."""

    name = "threshold"
    has_likelihood = False

    def sample(self, model, rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (rates > model.theta).float()

    def mean(self, model, rates: torch.Tensor) -> torch.Tensor:
        """[g > θ]: without a gradient (a model calibrated through its threshold gives its
        own ``expected_spikes``, as ThresholdSAM does with a surrogate)."""
        return self.sample(model, rates, None)
