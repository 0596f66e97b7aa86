from __future__ import annotations

import torch
from torch import Tensor, nn

from spikefit.checks import field_name, non_negative, number, positive, random_generator
from spikefit.stimulus.base_stimulus import BaseStimulus, Masks


class PoissonStimulus(BaseStimulus):
    r"""Pulses of constant strength at random times with Poisson-distributed gaps.

    The event times are :math:`t_0 + \sum_{k < n} \Delta_k` with
    :math:`\Delta_k \sim \mathrm{Pois}(\lambda)` (the first event at :math:`t_0`), kept while
    they fall before :math:`t_0 + D`. Each event switches the stimulus on for :math:`\tau` steps:

    .. math::
        f(t) = s \cdot \mathbb{1}\big[\exists\, e : 0 \le t - t_e < \tau\big]

    The plan is drawn once, at construction, and stored in the ``event_times`` buffer (so it is
    part of the ``state_dict``).

    Args:
        strength (float): pulse strength :math:`s` (an :class:`~torch.nn.Parameter`, frozen
            until ``requires_grad_`` is set, e.g. by calibration).
        mean_interval (float): mean gap :math:`\lambda` between events in steps (positive).
        duration (float): window :math:`D` in steps in which events may start (non-negative).
        stimulus_masks (Tensor or list[Tensor]): masks of the stimulated neurons, see
            :class:`BaseStimulus`.
        tau (float, optional): pulse length :math:`\tau` in steps (non-negative).
            (default: :obj:`1`)
        start (float, optional): time :math:`t_0` of the first event in steps. (default: :obj:`0`)
        batch_size (int, optional): networks per batch. (default: :obj:`1`)
        rng (torch.Generator, optional): CPU generator to draw the plan from.
        seed (int, optional): seed ≥ 0 of a fresh generator, instead of :obj:`rng`.
    """

    def __init__(
        self,
        strength: float,
        mean_interval: float,
        duration: float,
        stimulus_masks: Masks,
        tau: float = 1,
        start: float = 0,
        batch_size: int = 1,
        rng: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(stimulus_masks, batch_size)
        strength = number(self, "strength", strength)
        mean_interval = number(self, "mean_interval", mean_interval, positive)
        duration = number(self, "duration", duration, non_negative)
        tau = number(self, "tau", tau, non_negative)
        start = number(self, "start", start)
        rng = random_generator(field_name(self, "seed"), rng, seed)

        self.strength = nn.Parameter(torch.tensor(strength), requires_grad=False)
        self.register_buffer("tau", torch.tensor(tau))
        offsets = _event_offsets(mean_interval, duration, rng)
        self.register_buffer("event_times", (start + offsets).float())

    def time_course(self, t: Tensor) -> Tensor:
        times = self.event_times
        flat = t.reshape(-1).to(times.dtype)
        # Latest event at or before each time (-inf when there is none).
        padded = torch.cat([times.new_full((1,), float("-inf")), times])
        latest = padded[torch.searchsorted(times, flat, right=True)]
        on = (flat - latest < self.tau).reshape(t.shape)
        return self.strength * on

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # A saved plan may hold a different number of events: resize before copying it in.
        key = prefix + "event_times"
        if key in state_dict:
            self.event_times = self.event_times.new_empty(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _event_offsets(mean_interval: float, duration: float, rng: torch.Generator) -> Tensor:
    """Offsets (from the start) of events with Poisson(mean_interval) gaps before duration."""
    chunk = int(duration / mean_interval) + 16
    offsets = torch.zeros(1, dtype=torch.float64)
    while offsets[-1] < duration:
        rates = torch.full((chunk,), mean_interval, dtype=torch.float64)
        gaps = torch.poisson(rates, generator=rng)
        offsets = torch.cat([offsets, offsets[-1] + gaps.cumsum(0)])
    return offsets[offsets < duration]
