"""Binned spike recordings (`Recording`) and binning of spike times."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

EDGE_TOL = 1e-6
"""Slack, as a fraction of a bin (or of a sample), when a time is mapped to a bin index.

A spike written at a bin's left edge ``t0 + k·dt`` comes back as a float that may lie a few ulps
below the edge; ``floor((t - t0) / dt + EDGE_TOL)`` still puts it in bin ``k``. The float error
stays below 1e-7 bins for recordings of up to ~10^9 bins, and a true spike time is moved into the
next bin only when it lies within 1e-6 bins (1 ns at dt = 1 ms) of that bin's left edge."""


def check_dt(dt_ms: float) -> float:
    """Return ``dt_ms`` as a float, or raise ValueError unless it is a positive finite number."""
    dt = float(dt_ms)
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt_ms must be a positive bin width in milliseconds, got {dt_ms!r}")
    return dt


def format_ids(ids: Iterable[int], limit: int = 10) -> str:
    """Comma-separated ids for messages, shortened to the first ``limit``."""
    ids = [int(u) for u in ids]
    shown = ", ".join(map(str, ids[:limit]))
    return shown if len(ids) <= limit else f"{shown}, ... ({len(ids)} in all)"


def check_counts(counts: np.ndarray, what: str) -> None:
    """Raise ValueError unless ``counts`` is a non-empty [N, T] array of non-negative integers.

    ``what`` names the array (file or argument) in the message.
    """
    expected = "expected a [N, T] array of non-negative integer spike counts"
    if counts.ndim != 2 or 0 in counts.shape:
        raise ValueError(f"{what} has shape {counts.shape} ({expected})")
    if counts.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {counts.dtype} ({expected})")
    if counts.dtype.kind == "f":
        if not np.isfinite(counts).all():
            raise ValueError(f"{what} holds NaN or infinite values ({expected})")
        if (counts != np.round(counts)).any():
            raise ValueError(f"{what} holds non-integer values ({expected})")
    if counts.dtype.kind in "if" and (counts < 0).any():
        raise ValueError(f"{what} holds negative values ({expected})")


@dataclass(eq=False)
class Recording:
    """Spike counts of N units in T contiguous time bins.

    Attributes:
        spikes: [N, T] spike counts (float32); row n belongs to ``unit_ids[n]``, column k covers
            ``[t_start_s + k·dt, t_start_s + (k+1)·dt)``.
        dt: bin width in milliseconds.
        unit_ids: integer id of each row (e.g. the spike sorter's cluster id).
        t_start_s: time of the first bin's left edge, in seconds.
        source: where the data came from (usually a path); informational.
    """

    spikes: torch.Tensor = field(repr=False)
    dt: float
    unit_ids: list[int]
    t_start_s: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        self.spikes = torch.as_tensor(self.spikes, dtype=torch.float32)
        self.dt = check_dt(self.dt)
        self.unit_ids = [int(u) for u in self.unit_ids]
        self.t_start_s = float(self.t_start_s)
        if self.spikes.ndim != 2 or 0 in self.spikes.shape:
            raise ValueError(
                f"spikes has shape {tuple(self.spikes.shape)} (expected a non-empty [N, T] raster)"
            )
        if len(self.unit_ids) != self.n_units:
            raise ValueError(
                f"{len(self.unit_ids)} unit_ids for {self.n_units} rows of spikes "
                "(expected one id per row)"
            )
        if len(set(self.unit_ids)) != len(self.unit_ids):
            raise ValueError(f"unit_ids are not unique: {format_ids(self.unit_ids)}")

    @property
    def n_units(self) -> int:
        """Number of units N."""
        return self.spikes.shape[0]

    @property
    def n_bins(self) -> int:
        """Number of time bins T."""
        return self.spikes.shape[1]

    @property
    def duration_s(self) -> float:
        """Length of the binned range in seconds (T·dt)."""
        return self.n_bins * self.dt / 1000

    @property
    def t_stop_s(self) -> float:
        """Time of the last bin's right edge, in seconds."""
        return self.t_start_s + self.duration_s

    def rates_hz(self) -> torch.Tensor:
        """[N] mean firing rate of each unit in Hz (mean count per bin / dt · 1000)."""
        return self.spikes.mean(dim=1) / self.dt * 1000

    def select(
        self, unit_ids: Sequence[int] | None = None, min_rate_hz: float | None = None
    ) -> Recording:
        """Keep units ``unit_ids`` (in that order), then those firing at >= ``min_rate_hz`` Hz."""
        rows = list(range(self.n_units))
        if unit_ids is not None:
            wanted = [int(u) for u in unit_ids]
            if not wanted:
                raise ValueError("unit_ids is empty (expected at least one unit id)")
            row_of = {u: n for n, u in enumerate(self.unit_ids)}
            missing = [u for u in wanted if u not in row_of]
            if missing:
                raise ValueError(
                    f"unit ids {format_ids(missing)} not found "
                    f"(available: {format_ids(self.unit_ids)})"
                )
            rows = [row_of[u] for u in wanted]
        if min_rate_hz is not None:
            rates = self.rates_hz().tolist()
            kept = [n for n in rows if rates[n] >= min_rate_hz]
            if not kept:
                raise ValueError(
                    f"no unit fires at >= min_rate_hz={min_rate_hz} Hz "
                    f"(highest rate {max(rates[n] for n in rows):.4g} Hz)"
                )
            rows = kept
        return replace(self, spikes=self.spikes[rows], unit_ids=[self.unit_ids[n] for n in rows])

    def time_slice(
        self, t_start_s: float | None = None, t_stop_s: float | None = None
    ) -> Recording:
        """Keep the bins lying wholly inside ``[t_start_s, t_stop_s)`` (seconds).

        None means the recording's own edge. A range reaching outside the recording, or holding no
        whole bin, is a ValueError.
        """
        dt_s = self.dt / 1000
        first = 0
        stop = self.n_bins
        if t_start_s is not None:
            first = math.ceil((t_start_s - self.t_start_s) / dt_s - EDGE_TOL)
        if t_stop_s is not None:
            stop = math.floor((t_stop_s - self.t_start_s) / dt_s + EDGE_TOL)
        if first < 0 or stop > self.n_bins:
            raise ValueError(
                f"time range [{t_start_s}, {t_stop_s}) s reaches outside the recording "
                f"[{self.t_start_s:g}, {self.t_stop_s:g}) s"
            )
        if stop <= first:
            raise ValueError(
                f"time range [{t_start_s}, {t_stop_s}) s holds no whole bin of {self.dt:g} ms"
            )
        return self._bins(first, stop)

    def split(self, heldout_fraction: float = 0.2) -> tuple[Recording, Recording]:
        """Split in time: the first (1 − f) of the bins for training, the rest held out."""
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
        n_train = round(self.n_bins * (1 - heldout_fraction))
        if not 1 <= n_train < self.n_bins:
            raise ValueError(
                f"heldout_fraction={heldout_fraction} of {self.n_bins} bins leaves "
                f"{n_train} training and {self.n_bins - n_train} held-out bins (need >= 1 each)"
            )
        return self._bins(0, n_train), self._bins(n_train, self.n_bins)

    def to_spike_times(self) -> tuple[np.ndarray, np.ndarray]:
        """Spike times (s, float64, each at its bin's left edge) and unit ids (int64).

        Sorted by time, then by row; a bin holding k spikes gives k equal times.
        """
        counts = self.spikes.T.round().to(torch.int64).cpu().numpy()  # [T, N]
        bins, rows = np.nonzero(counts)
        repeats = counts[bins, rows]
        times = self.t_start_s + np.repeat(bins, repeats) * self.dt / 1000
        units = np.asarray(self.unit_ids, dtype=np.int64)[np.repeat(rows, repeats)]
        return times, units

    def _bins(self, first: int, stop: int) -> Recording:
        """The bins ``first`` to ``stop - 1``, with the start time moved along."""
        return replace(
            self,
            spikes=self.spikes[:, first:stop],
            t_start_s=self.t_start_s + first * self.dt / 1000,
        )


def bin_spike_times(
    spike_times_s: Sequence[float] | np.ndarray,
    spike_clusters: Sequence[int] | np.ndarray,
    dt_ms: float,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
    unit_ids: Sequence[int] | None = None,
) -> Recording:
    """Count spikes per unit in left-closed bins ``[t0 + k·dt, t0 + (k+1)·dt)``.

    Args:
        spike_times_s: [S] spike times in seconds (any order).
        spike_clusters: [S] integer unit id of each spike.
        dt_ms: bin width in milliseconds.
        t_start_s: left edge t0 of the first bin, in seconds (default 0).
        t_stop_s: end of the binned range in seconds; only whole bins are kept. Default: up to
            and including the bin of the last spike.
        unit_ids: the rows of the result, in this order; ids without spikes give zero rows.
            Default: the sorted unique ids of ``spike_clusters``. Spikes of other units, and
            spikes outside the binned range, are dropped.

    Returns:
        A `Recording` with ``t_start_s = t0``.
    """
    times = np.asarray(spike_times_s, dtype=np.float64)
    clusters = np.asarray(spike_clusters)
    if times.ndim != 1 or clusters.shape != times.shape:
        raise ValueError(
            f"spike times {times.shape} and clusters {clusters.shape} must be 1-D arrays of "
            "the same length (one unit id per spike)"
        )
    if clusters.size and clusters.dtype.kind not in "iu":
        raise ValueError(f"spike clusters have dtype {clusters.dtype} (expected integer unit ids)")
    if not np.isfinite(times).all():
        raise ValueError("spike times hold NaN or infinite values (expected finite seconds)")
    clusters = clusters.astype(np.int64)
    dt_s = check_dt(dt_ms) / 1000
    t0 = 0.0 if t_start_s is None else float(t_start_s)

    if t_stop_s is None:
        if times.size == 0:
            raise ValueError("no spike times to bin (give t_stop_s to bin an empty range)")
        n_bins = math.floor((times.max() - t0) / dt_s + EDGE_TOL) + 1
        if n_bins < 1:
            raise ValueError(f"no spike at or after t_start_s={t0:g} s")
    else:
        if t_stop_s <= t0:
            raise ValueError(f"t_stop_s={t_stop_s:g} s is not after t_start_s={t0:g} s")
        n_bins = math.floor((t_stop_s - t0) / dt_s + EDGE_TOL)
        if n_bins < 1:
            raise ValueError(
                f"dt_ms={dt_ms:g} is coarser than the time range [{t0:g}, {t_stop_s:g}) s "
                "(no whole bin fits)"
            )

    ids = np.unique(clusters) if unit_ids is None else np.asarray(unit_ids, dtype=np.int64)
    if ids.size == 0:
        raise ValueError("no units to bin")
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, clusters).clip(max=ids.size - 1)
    bins = np.floor((times - t0) / dt_s + EDGE_TOL).astype(np.int64)
    keep = (sorted_ids[pos] == clusters) & (bins >= 0) & (bins < n_bins)
    flat = order[pos[keep]] * n_bins + bins[keep]
    counts = np.bincount(flat, minlength=ids.size * n_bins).reshape(ids.size, n_bins)
    return Recording(torch.from_numpy(counts.astype(np.float32)), dt_ms, ids.tolist(), t0)
