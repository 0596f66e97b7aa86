"""Spike trains from the objects users already hold: a pynapple ``TsGroup`` and a
spikeinterface sorting (optional extras ``spikefit[pynapple]``, ``spikefit[spikeinterface]``).

Both are binned like an ``.npz`` of spike times, with the same selection (``unit_ids``,
``min_rate_hz``, ``t_start_s``, ``t_stop_s``) and the same checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spikefit.checks import InputError, whole

from .readers import _bin_selected, _check_spike_times
from .recording import Recording


def _binned(
    times: list[np.ndarray],
    ids: np.ndarray,
    span: tuple[float, float | None],
    dt_ms: float,
    selection: tuple,
    source: str,
) -> Recording:
    """Bins per-unit spike times (s) of the units ``ids`` over ``span``."""
    clusters = (
        np.concatenate(
            [np.full(len(t), u, dtype=np.int64) for t, u in zip(times, ids, strict=True)]
        )
        if times
        else np.zeros(0, dtype=np.int64)
    )
    merged = np.concatenate(times) if times else np.zeros(0)
    order = np.argsort(merged, kind="stable")
    merged, clusters = merged[order], clusters[order]
    _check_spike_times(merged, f"{source} spike times", sorted_required=True)
    rec = _bin_selected(merged, clusters, dt_ms, available=ids, span=span, selection=selection)
    rec.source = source
    return rec


def from_tsgroup(
    group: Any,
    dt_ms: float,
    *,
    unit_ids: Sequence[int] | None = None,
    min_rate_hz: float | None = None,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
) -> Recording:
    """Bins a pynapple ``TsGroup`` (one ``Ts`` of spike times in seconds per unit, keyed by
    its integer unit id) at ``dt_ms`` ms, over the group's time support."""
    ids = np.asarray(list(group.keys()), dtype=np.int64)
    times = [np.asarray(group[int(u)].t, dtype=np.float64) for u in ids]
    support = group.time_support
    span = (float(np.min(support.start)), float(np.max(support.end)))
    return _binned(times, ids, span, dt_ms, (unit_ids, min_rate_hz, t_start_s, t_stop_s), "TsGroup")


def from_sorting(
    sorting: Any,
    dt_ms: float,
    *,
    segment_index: int = 0,
    unit_ids: Sequence[int] | None = None,
    min_rate_hz: float | None = None,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
) -> Recording:
    """Bins one segment of a spikeinterface ``BaseSorting`` at ``dt_ms`` ms (spike trains in
    samples at its sampling frequency). Unit ids that are not integers are numbered 0 … N−1
    in the sorting's order. The recording ends at the segment's last sample where the sorting
    knows its recording, else at the last spike."""
    segments = sorting.get_num_segments()
    segment_index = whole("from_sorting.segment_index", segment_index, 0)
    if segment_index >= segments:
        raise InputError(
            "from_sorting.segment_index",
            f"{segment_index} is out of range",
            f"a segment of the sorting's {segments}: 0 … {segments - 1}",
        )
    rate = float(sorting.get_sampling_frequency())
    names = list(sorting.get_unit_ids())
    try:
        ids = np.asarray([int(name) for name in names], dtype=np.int64)
    except (TypeError, ValueError):
        ids = np.arange(len(names), dtype=np.int64)
    times = [
        np.asarray(
            sorting.get_unit_spike_train(name, segment_index=segment_index), dtype=np.float64
        )
        / rate
        for name in names
    ]
    stop = None
    if sorting.has_recording():
        stop = sorting.get_num_samples(segment_index=segment_index) / rate
    return _binned(
        times, ids, (0.0, stop), dt_ms, (unit_ids, min_rate_hz, t_start_s, t_stop_s), "sorting"
    )


def from_object(source: Any, dt_ms: float, **selection: Any) -> Recording | None:
    """The recording of a pynapple ``TsGroup`` or a spikeinterface ``BaseSorting`` (None for
    anything else, or when neither package is installed)."""
    try:
        from pynapple import TsGroup

        if isinstance(source, TsGroup):
            return from_tsgroup(source, dt_ms, **selection)
    except ImportError:
        pass
    try:
        from spikeinterface.core import BaseSorting

        if isinstance(source, BaseSorting):
            return from_sorting(source, dt_ms, **selection)
    except ImportError:
        pass
    return None
