from __future__ import annotations

import torch
from torch import Tensor, nn

from spikefit.checks import non_negative, number, positive
from spikefit.stimulus.base_stimulus import BaseStimulus, Masks


class RegularStimulus(BaseStimulus):
    r"""Periodic pulses of constant strength.

    .. math::
        f(t) = s \cdot \mathbb{1}\big[(t - t_0) \bmod T < \tau\big]
        \cdot \mathbb{1}\big[t_0 \le t < t_\mathrm{stop}\big]

    The stimulus is on for the first :math:`\tau` steps of every period, the period counting
    from the start time :math:`t_0`. All times are in steps.

    Args:
        strength (float): pulse strength :math:`s` (an :class:`~torch.nn.Parameter`, frozen
            until ``requires_grad_`` is set, e.g. by calibration).
        period (float): period :math:`T` in steps (positive).
        tau (float): pulse length :math:`\tau` in steps (non-negative).
        stop (float): time :math:`t_\mathrm{stop}` (step) from which the stimulus is off.
        stimulus_masks (Tensor or list[Tensor]): masks of the stimulated neurons, see
            :class:`BaseStimulus`.
        batch_size (int, optional): networks per batch. (default: :obj:`1`)
        start (float, optional): start time :math:`t_0` in steps. (default: :obj:`0`)
        dt (float, optional): step length in ms, kept for reference; the schedule itself is
            in steps. (default: :obj:`1.0`)
    """

    def __init__(
        self,
        strength: float,
        period: float,
        tau: float,
        stop: float,
        stimulus_masks: Masks,
        batch_size: int = 1,
        start: float = 0,
        dt: float = 1.0,
    ) -> None:
        super().__init__(stimulus_masks, batch_size)
        strength = number(self, "strength", strength)
        values = {
            "period": number(self, "period", period, positive),
            "tau": number(self, "tau", tau, non_negative),
            "stop": number(self, "stop", stop, non_negative),
            "start": number(self, "start", start),
            "dt": number(self, "dt", dt, positive),
        }
        self.strength = nn.Parameter(torch.tensor(strength), requires_grad=False)
        for name, value in values.items():
            self.register_buffer(name, torch.tensor(value))

    def time_course(self, t: Tensor) -> Tensor:
        on = torch.remainder(t - self.start, self.period) < self.tau
        inside = (t >= self.start) & (t < self.stop)
        return self.strength * (on & inside)
