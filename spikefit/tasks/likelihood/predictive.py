r"""Posterior-predictive check of a likelihood fit: the fitted network, simulated freely (no
teacher forcing), against the recorded spikes: per-unit rates, interspike-interval (ISI)
distributions and the cross-correlograms (CCGs) of the strongest pairs. A simulation whose
activity runs away (the engine's :class:`~spikefit.models.RunawayActivityError`, a mean rate
over :data:`RUNAWAY_RATE_FACTOR` times the recorded one, or neurons spiking in most bins)
marks the fitted network unstable."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch_geometric.data import Data

from spikefit.models import BaseModel, RunawayActivityError
from spikefit.tasks.likelihood.metrics import panel_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: A simulated mean rate over this many times the recorded one: the network runs away.
RUNAWAY_RATE_FACTOR = 10.0
#: Steps simulated (from random spikes) before the compared ones.
EQUILIBRATION_STEPS = 1_000
#: Units whose ISI histograms are drawn (the most active ones).
ISI_UNITS = 6


def rates_hz(raster: torch.Tensor, dt: float) -> torch.Tensor:
    """Every unit's rate [N] in Hz, its mean count per bin of a raster [N, T] × 1000/Δt."""
    return (raster.sum(1, dtype=torch.float64) / raster.shape[1] * 1000 / dt).float()


def interspike_intervals(raster: torch.Tensor) -> list[np.ndarray]:
    """Every unit's intervals between consecutive spikes of a count raster [N, T], in bins
    (0 between the spikes of one bin)."""
    units, bins = raster.nonzero(as_tuple=True)
    repeats = raster[units, bins].long()
    times = bins.repeat_interleave(repeats)
    per_unit = torch.bincount(units.repeat_interleave(repeats), minlength=len(raster))
    return [np.diff(unit.numpy()) for unit in times.split(per_unit.tolist())]


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    r"""The two-sample Kolmogorov–Smirnov distance :math:`\sup_x |F_a(x) - F_b(x)|` of the
    empirical distributions of the samples ``a`` and ``b``; NaN if either is empty."""
    if not len(a) or not len(b):
        return math.nan
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    below_a = np.searchsorted(a, points, side="right") / len(a)
    below_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(below_a - below_b).max())


def cross_correlograms(raster: torch.Tensor, pairs: torch.Tensor, max_lag: int) -> torch.Tensor:
    r"""The CCG of every pair (j, i) of ``pairs`` [2, P] in a count raster [N, T],
    :math:`C_{ji}(\ell) = \sum_t X_j(t) X_i(t + \ell) / \sum_t X_j(t)` for
    :math:`\ell = -L \dots L` (``max_lag``): the expected count of i in the bin ℓ bins after
    a spike of j [P, 2L+1] (NaN for a silent j; bins outside the raster count as silent)."""
    lags = torch.arange(2 * max_lag + 1)
    rows = []
    for pre, post in pairs.t().tolist():
        times = raster[pre].nonzero().squeeze(1)
        counts = raster[pre, times].float()
        padded = torch.nn.functional.pad(raster[post].float(), (max_lag, max_lag))
        rows.append(counts @ padded[times.unsqueeze(1) + lags] / counts.sum())
    return torch.stack(rows) if rows else torch.zeros(0, len(lags))


def row_correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Pearson correlation [P] of every row of ``a`` [P, L] with the same row of ``b``
    (NaN where a row is constant)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.square().sum(1) * b.square().sum(1)).sqrt()


def finite_median(values: torch.Tensor | list[float]) -> float:
    """The median of the finite ``values`` (NaN when there are none)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def runaway_reason(recorded: torch.Tensor, simulated: torch.Tensor) -> str | None:
    """Why the ``simulated`` raster [N, S] ran away from the ``recorded`` one [N, T]: a mean
    rate over :data:`RUNAWAY_RATE_FACTOR` times the recorded, or neurons spiking in over half
    the bins and twice their recorded share of bins; None when neither."""
    means = [raster.sum(dtype=torch.float64) / raster.numel() for raster in (simulated, recorded)]
    factor = float(means[0] / means[1])
    if factor > RUNAWAY_RATE_FACTOR:
        return (
            f"the simulated mean rate is {factor:.3g}× the recorded one "
            f"(over {RUNAWAY_RATE_FACTOR:g}×)"
        )
    share, recorded_share = (
        (raster > 0).sum(1) / raster.shape[1] for raster in (simulated, recorded)
    )
    busy = ((share > 0.5) & (share > 2 * recorded_share)).nonzero().squeeze(1)
    if len(busy):
        unit = int(busy[0])
        return (
            f"neurons spike in most bins: {len(busy)} of {len(share)} (neuron {unit} in "
            f"{float(share[unit]):.0%} of the simulated bins, {float(recorded_share[unit]):.1%}"
            " of the recorded)"
        )
    return None


@dataclass
class PredictiveCheck:
    """The fitted network simulated for ``steps`` bins against the recorded spikes.

    Attributes:
        steps: bins simulated (after :data:`EQUILIBRATION_STEPS`).
        seed: the simulation's seed.
        dt: bin width Δt in ms.
        recorded_rates: every unit's recorded rate [N] (Hz).
        simulated_rates: every unit's simulated rate [N] (Hz); None when the engine stopped
            the runaway simulation.
        reason: why the fitted network is unstable; None when it is stable.
        recorded_isi, simulated_isi: every unit's interspike intervals (bins), when stable.
        isi_ks: every unit's :func:`ks_distance` of its simulated from its recorded ISIs [N].
        pairs: the pairs [2, P] whose CCGs are compared (pre, post).
        max_lag: the CCGs' largest lag L in bins.
        recorded_ccg, simulated_ccg: their :func:`cross_correlograms` [P, 2L+1].
    """

    steps: int
    seed: int
    dt: float
    recorded_rates: torch.Tensor
    simulated_rates: torch.Tensor | None = None
    reason: str | None = None
    recorded_isi: list[np.ndarray] = field(default_factory=list)
    simulated_isi: list[np.ndarray] = field(default_factory=list)
    isi_ks: list[float] = field(default_factory=list)
    pairs: torch.Tensor = field(default_factory=lambda: torch.zeros(2, 0, dtype=torch.long))
    max_lag: int = 0
    recorded_ccg: torch.Tensor | None = None
    simulated_ccg: torch.Tensor | None = None

    def compare(
        self, recorded: torch.Tensor, simulated: torch.Tensor, pairs: torch.Tensor, max_lag: int
    ) -> None:
        """The ISIs and their KS distances of every unit, and the CCGs of ``pairs`` [2, P]
        up to ``max_lag`` bins, of the ``recorded`` and ``simulated`` rasters."""
        self.recorded_isi = interspike_intervals(recorded)
        self.simulated_isi = interspike_intervals(simulated)
        self.isi_ks = [
            ks_distance(a, b) for a, b in zip(self.recorded_isi, self.simulated_isi, strict=True)
        ]
        self.pairs, self.max_lag = pairs, max_lag
        self.recorded_ccg = cross_correlograms(recorded, pairs, max_lag)
        self.simulated_ccg = cross_correlograms(simulated, pairs, max_lag)

    def rate_agreement(self) -> tuple[float, float]:
        """The correlation over units of the simulated with the recorded rates, and the
        median ratio simulated/recorded over the units that fired in the recording."""
        recorded, simulated = self.recorded_rates, self.simulated_rates
        fired = recorded > 0
        correlation = float(row_correlations(recorded[None], simulated[None])[0])
        return correlation, finite_median(simulated[fired] / recorded[fired])

    def ccg_correlations(self) -> torch.Tensor:
        """The correlation [P] of every compared pair's simulated with its recorded CCG."""
        return row_correlations(self.recorded_ccg, self.simulated_ccg)

    def summary(self) -> dict:
        """``summary.json``'s ``posterior_predictive``: ``stable`` (and ``reason``), the
        ``steps`` and ``seed``, the rates (Hz) with their correlation over units and the
        median simulated/recorded ratio, the ISIs' KS distances and their median, the
        compared pairs, the CCGs' correlations and their median."""
        result = {"stable": self.reason is None, "steps": self.steps, "seed": self.seed}
        if self.reason is not None:
            result["reason"] = self.reason
        result["recorded_rate_hz"] = self.recorded_rates.tolist()
        if self.simulated_rates is not None:
            correlation, ratio = self.rate_agreement()
            result |= {
                "simulated_rate_hz": self.simulated_rates.tolist(),
                "rate_correlation": correlation,
                "rate_median_ratio": ratio,
            }
        if self.reason is None:
            correlations = self.ccg_correlations().tolist()
            result |= {
                "isi_ks": self.isi_ks,
                "isi_ks_median": finite_median(self.isi_ks),
                "ccg_pairs": self.pairs.t().tolist(),
                "ccg_max_lag_ms": self.max_lag * self.dt,
                "ccg_correlation": correlations,
                "ccg_correlation_median": finite_median(correlations),
            }
        return result

    def figures(self) -> dict[str, Figure]:
        """``predictive_rates`` (with simulated rates), and when stable ``predictive_isi``
        and, with compared pairs, ``predictive_ccg``."""
        figures = {}
        if self.simulated_rates is not None:
            figures["predictive_rates"] = self.rates_figure()
        if self.reason is None:
            figures["predictive_isi"] = self.isi_figure()
            if self.pairs.shape[1]:
                figures["predictive_ccg"] = self.ccg_figure()
        return figures

    def rates_figure(self) -> Figure:
        """Every unit's simulated against its recorded rate (Hz), with the identity."""
        from matplotlib.figure import Figure

        correlation, ratio = self.rate_agreement()
        recorded, simulated = self.recorded_rates.numpy(), self.simulated_rates.numpy()
        figure = Figure(figsize=(5, 5))
        axes = figure.subplots()
        axes.scatter(recorded, simulated, s=10, alpha=0.7)
        high = max(recorded.max(), simulated.max(), 1e-3)
        axes.plot([0, high], [0, high], color="grey", lw=0.8)
        verdict = (
            f"r = {correlation:.3f}, median ratio {ratio:.3f}"
            if self.reason is None
            else f"UNSTABLE: {self.reason}"
        )
        axes.set(
            xlabel="recorded rate (Hz)",
            ylabel="simulated rate (Hz)",
            title=f"rates of {len(recorded)} units, the fitted network simulated "
            f"for {self.steps:,} bins:\n" + textwrap.fill(verdict, 60),
        )
        return figure

    def isi_figure(self) -> Figure:
        """The recorded and simulated ISI histograms (ms, density) of the
        :data:`ISI_UNITS` units with the most recorded spikes."""
        units = np.argsort([-len(isi) for isi in self.recorded_isi])[:ISI_UNITS]
        figure, panels = panel_grid(
            len(units),
            f"interspike intervals of the {len(units)} most active units: recorded (black) "
            f"and simulated (red); median KS distance {finite_median(self.isi_ks):.3f}",
            columns=3,
        )
        for panel, unit in zip(panels, units, strict=True):
            recorded, simulated = self.recorded_isi[unit], self.simulated_isi[unit]
            top = np.quantile(recorded, 0.99) if len(recorded) else 1
            edges = np.linspace(0, top + 1, 41) * self.dt
            for intervals, colour in ((recorded, "black"), (simulated, "tab:red")):
                if len(intervals):
                    panel.hist(
                        intervals * self.dt, edges, density=True, histtype="step", color=colour
                    )
            panel.set(title=f"unit {unit}: KS {self.isi_ks[unit]:.3f}", xlabel="ISI (ms)")
        return figure

    def ccg_figure(self) -> Figure:
        """The recorded and simulated CCGs (Hz) of the compared pairs, against the lag in
        ms after the presynaptic spike."""
        lags = np.arange(-self.max_lag, self.max_lag + 1) * self.dt
        correlations = self.ccg_correlations().tolist()
        figure, panels = panel_grid(
            self.pairs.shape[1],
            f"cross-correlograms of the {self.pairs.shape[1]} strongest pairs: recorded "
            f"(black) and simulated (red); median correlation "
            f"{finite_median(correlations):.3f}",
        )
        per_second = 1000 / self.dt
        for k, panel in enumerate(panels):
            pre, post = self.pairs[:, k].tolist()
            panel.plot(lags, self.recorded_ccg[k].numpy() * per_second, color="black", lw=0.8)
            panel.plot(lags, self.simulated_ccg[k].numpy() * per_second, color="tab:red", lw=0.8)
            panel.set(
                title=f"{pre}→{post}: r = {correlations[k]:.2f}",
                xlabel="lag after the pre spike (ms)",
                ylabel="post rate (Hz)",
            )
        return figure


def posterior_predictive(
    model: BaseModel,
    network: Data,
    recorded: torch.Tensor,
    steps: int,
    seed: int,
    pairs: torch.Tensor,
    max_lag: int,
) -> PredictiveCheck:
    """Simulates ``model`` on ``network`` for ``steps`` bins with ``seed`` and compares the
    spikes with the ``recorded`` raster [N, T] (:class:`PredictiveCheck`; the CCGs of
    ``pairs`` [2, P] up to ``max_lag`` bins). A runaway simulation is reported as unstable,
    not raised."""
    dt = float(model.dt)
    check = PredictiveCheck(steps, seed, dt, rates_hz(recorded, dt))
    try:
        simulated = model.simulate(
            network, steps, seed=seed, equilibration_steps=EQUILIBRATION_STEPS, verbose=False
        ).cpu()
    except RunawayActivityError as error:
        check.reason = error.problem
        return check
    check.simulated_rates = rates_hz(simulated, dt)
    check.reason = runaway_reason(recorded, simulated)
    if check.reason is None:
        check.compare(recorded, simulated, pairs, max_lag)
    return check


def describe(summary: dict) -> str:
    """One console line of the ``posterior_predictive`` ``summary``."""
    if "skipped" in summary:
        return f"  posterior-predictive check skipped: {summary['skipped']}"
    head = f"  posterior-predictive check ({summary['steps']:,} bins simulated): "
    if not summary["stable"]:
        return head + f"UNSTABLE, {summary['reason']}"
    parts = [
        f"rates r = {summary['rate_correlation']:.3f}, median ratio "
        f"{summary['rate_median_ratio']:.3f}",
        f"ISI KS distance median {summary['isi_ks_median']:.3f}",
    ]
    if summary["ccg_pairs"]:
        parts.append(
            f"CCG correlation median {summary['ccg_correlation_median']:.3f} over "
            f"{len(summary['ccg_pairs'])} pairs"
        )
    return head + "; ".join(parts)
