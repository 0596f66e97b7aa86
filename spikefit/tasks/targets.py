"""Firing-rate targets: which neurons (and steps) a target rate applies to."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from spikefit.checks import InputError

#: Default populations: the excitatory first and the inhibitory second half of every network.
DALE_POPULATIONS = {"excitatory": (0.0, 0.5), "inhibitory": (0.5, 1.0)}


@dataclass
class RateTarget:
    """A target rate (Hz) for the neurons in ``mask`` [N] (or [S, N] steps and neurons)."""

    name: str
    rate_hz: torch.Tensor
    mask: torch.Tensor | None = None

    def per_trial(self, counts: torch.Tensor) -> torch.Tensor:
        """Mean of ``counts`` [K, S, N] over this target's entries in every trial, in spikes
        per step: [K], or [K, N] for a vector target."""
        if self.rate_hz.dim() == 1:
            return counts.mean(dim=1)
        if self.mask is None:
            return counts.mean(dim=(1, 2))
        return counts[:, self.mask.expand(counts.shape[1:])].mean(dim=1)

    def achieved(self, counts: torch.Tensor) -> torch.Tensor:
        """Mean of ``counts`` [K, S, N] over this target's entries (per neuron for a vector
        target), in spikes per step. Linear in the counts: every trial has the same entries."""
        return self.per_trial(counts).mean(dim=0)

    def spikes_per_trial(self, n_neurons: int, steps: int, dt_ms: float) -> float:
        """Spikes expected in one trial of ``steps`` steps over this target's entries, at
        the target rate."""
        if self.rate_hz.dim() == 1:
            return float(self.rate_hz.sum()) * steps * dt_ms / 1000
        if self.mask is None:
            entries = n_neurons * steps
        else:
            entries = int(self.mask.sum()) * (steps if self.mask.dim() == 1 else 1)
        return float(self.rate_hz) * entries * dt_ms / 1000

    def relative_error(self, rate_hz: torch.Tensor) -> torch.Tensor:
        """Relative error of ``rate_hz`` (Hz, the target's shape, with leading dimensions)."""
        return (rate_hz - self.rate_hz) / self.rate_hz

    def error_of_mean(self, errors: torch.Tensor) -> torch.Tensor:
        """Relative error of the mean rate from :meth:`relative_error`'s ``errors`` [..., N]
        of a vector target (the errors weighted by the target rates), or the error itself;
        the measure of convergence (a vector target converges in its mean)."""
        if self.rate_hz.dim() == 0:
            return errors
        return errors @ (self.rate_hz / self.rate_hz.sum())


def check_populations(
    owner: str,
    population_rates_hz: dict[str, float] | None,
    populations: dict[str, tuple[float, float]] | None,
) -> None:
    """Raises InputError unless every population is a [start, stop) range of fractions
    (0 ≤ start < stop ≤ 1) and every population rate names one."""
    populations = populations or DALE_POPULATIONS
    for name, (start, stop) in populations.items():
        if not 0 <= start < stop <= 1:
            raise InputError(
                f"{owner}.populations.{name}",
                f"[{start}, {stop}) is not a range of fractions",
                "[start, stop) with 0 ≤ start < stop ≤ 1",
            )
    for name in population_rates_hz or {}:
        if name not in populations:
            raise InputError(
                f"{owner}.population_rates_hz.{name}",
                "names no population",
                f"one of {sorted(populations)} (set populations: {{name: "
                f"[start, stop)}} as fractions of each network)",
            )


def local_positions(data: Data) -> torch.Tensor:
    """Relative position in [0, 1) of every neuron within its own network [N]."""
    n = data.num_nodes
    ptr = getattr(data, "ptr", None)
    if ptr is None:
        return torch.arange(n, device=data.W0.device) / n
    network = data.batch
    sizes = (ptr[1:] - ptr[:-1])[network]
    return (torch.arange(n, device=ptr.device) - ptr[network]) / sizes


def build_targets(
    data: Data,
    stimulus_on: torch.Tensor | None,
    rate_hz: float | None,
    population_rates_hz: dict[str, float] | None,
    populations: dict[str, tuple[float, float]] | None,
    neuron_rates_hz: list[float] | None,
    stimulated_rate_hz: float | None,
    owner: str,
) -> list[RateTarget]:
    """The targets for a network batch. ``stimulus_on`` [S, N] marks stimulated
    steps of each neuron; per-neuron rates give one value per neuron of each network.
    Errors name the settings as fields of ``owner``."""
    device = data.W0.device
    targets = []
    if rate_hz is not None:
        targets.append(RateTarget("global", torch.tensor(rate_hz, device=device)))
    if population_rates_hz:
        populations = populations or DALE_POPULATIONS
        position = local_positions(data)
        for name, rate in population_rates_hz.items():
            start, stop = populations[name]
            mask = (position >= start) & (position < stop)
            if not mask.any():
                raise InputError(
                    f"{owner}.populations.{name}",
                    f"[{start}, {stop}) holds no neuron of a {data.num_nodes}-neuron batch",
                    "a range that covers at least one neuron of each network",
                )
            targets.append(RateTarget(name, torch.tensor(rate, device=device), mask))
    if neuron_rates_hz is not None:
        position = local_positions(data)
        per_network = torch.tensor(neuron_rates_hz, device=device)
        index = (position * len(per_network)).round().long()
        if (position * len(per_network) - index).abs().max() > 1e-3:
            raise InputError(
                f"{owner}.neuron_rates_hz",
                f"{len(per_network)} rates do not fit networks of other sizes",
                "one rate per neuron of each network",
            )
        targets.append(RateTarget("per_neuron", per_network[index]))
    if stimulated_rate_hz is not None:
        if stimulus_on is None or not stimulus_on.any():
            raise InputError(
                f"{owner}.stimulated_rate_hz",
                "no stimulus is on during the simulated window",
                "a stimulus (give stimulus: …) that is on during the window",
            )
        targets.append(
            RateTarget("stimulated", torch.tensor(stimulated_rate_hz, device=device), stimulus_on)
        )
    if not targets:
        raise InputError(
            f"{owner}.target_rate_hz",
            "no target is given",
            "target_rate_hz, population_rates_hz, neuron_rates_hz or stimulated_rate_hz",
        )
    return targets
