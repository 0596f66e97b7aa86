from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spikefit.checks import non_negative, number, positive
from spikefit.stimulus.base_stimulus import BaseStimulus, Masks


class SinStimulus(BaseStimulus):
    r"""Sinusoidal stimulus on a baseline, during a window of ``duration`` steps.

    .. math::
        f(t) = \Big(A \sin\big(2\pi (t - t_0)\,\Delta t / T + \phi\big) + b\Big)
        \cdot \mathbb{1}\big[t_0 \le t < t_0 + D\big]

    Args:
        amplitude (float): amplitude :math:`A` (non-negative).
        period (float): period :math:`T` in ms (positive).
        duration (float): length :math:`D` of the stimulus window in steps (non-negative).
        stimulus_masks (Tensor or list[Tensor]): masks of the stimulated neurons, see
            :class:`BaseStimulus`.
        phase (float, optional): phase :math:`\phi` in radians. (default: :obj:`0`)
        baseline (float, optional): constant offset :math:`b`. (default: :obj:`0`)
        start (float, optional): start time :math:`t_0` in steps. (default: :obj:`0`)
        dt (float, optional): step length :math:`\Delta t` in ms. (default: :obj:`1.0`)
        batch_size (int, optional): networks per batch. (default: :obj:`1`)

    :obj:`amplitude`, :obj:`phase` and :obj:`baseline` are :class:`~torch.nn.Parameter`
    objects, frozen until ``requires_grad_`` is set (e.g. by calibration).
    """

    def __init__(
        self,
        amplitude: float,
        period: float,
        duration: float,
        stimulus_masks: Masks,
        phase: float = 0,
        baseline: float = 0,
        start: float = 0,
        dt: float = 1.0,
        batch_size: int = 1,
    ) -> None:
        super().__init__(stimulus_masks, batch_size)
        parameters = {
            "amplitude": number(self, "amplitude", amplitude, non_negative),
            "phase": number(self, "phase", phase),
            "baseline": number(self, "baseline", baseline),
        }
        buffers = {
            "period": number(self, "period", period, positive),
            "duration": number(self, "duration", duration, non_negative),
            "start": number(self, "start", start),
            "dt": number(self, "dt", dt, positive),
        }
        for name, value in parameters.items():
            self.register_parameter(name, nn.Parameter(torch.tensor(value), requires_grad=False))
        for name, value in buffers.items():
            self.register_buffer(name, torch.tensor(value))

    def time_course(self, t: Tensor) -> Tensor:
        angle = 2 * math.pi * (t - self.start) * self.dt / self.period + self.phase
        inside = (t >= self.start) & (t < self.start + self.duration)
        return torch.where(inside, self.amplitude * torch.sin(angle) + self.baseline, 0.0)
