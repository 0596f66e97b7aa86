"""Readers of recorded (or written) spike data; each returns a binned `Recording`.

Every reader takes the bin width ``dt_ms`` and the selection keywords ``unit_ids`` (keep these
units, in this order), ``min_rate_hz`` (then keep units firing at >= this rate) and
``t_start_s`` / ``t_stop_s`` (bin only ``[t_start_s, t_stop_s)``, whole bins, in seconds).
Bad files raise ValueError (FileNotFoundError for missing paths) naming the file, the field
and the expected form. A selected unit without spikes, or a recording without any, is an error:
leave such units out with ``unit_ids`` or ``min_rate_hz > 0``.
"""

from __future__ import annotations

import ast
import csv
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikefit.checks import InputError
from spikefit.files import load_tensor

from .recording import EDGE_TOL, Recording, bin_spike_times, check_counts, check_dt, format_ids

PathLike = str | os.PathLike[str]


@contextmanager
def _naming(source: Path) -> Iterator[None]:
    """Prefix the message of any ValueError raised inside with ``source``."""
    try:
        yield
    except InputError:  # names its file already
        raise
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


def _existing_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an existing file)")
    return path


def _load_npy(path: Path) -> np.ndarray:
    """Load a .npy array (no pickles); a missing or unreadable file names ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an existing .npy file)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read {path.name} as a .npy array ({err})") from err


def _column(array: np.ndarray, field: str) -> np.ndarray:
    """A 1-D view of an [S] or [S, 1] array (Kilosort saves [S, 1] columns)."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{field} has shape {array.shape} (expected a 1-D array, one per spike)")
    return array


def _check_spike_times(times_s: np.ndarray, field: str, sorted_required: bool) -> None:
    """Spike times (s) must be finite, >= 0 and, where required, non-decreasing."""
    if times_s.size == 0:
        raise ValueError(f"{field} is empty (no spikes: empty recording)")
    if not np.isfinite(times_s).all():
        raise ValueError(f"{field} holds NaN or infinite values (expected finite spike times)")
    if (times_s < 0).any():
        raise ValueError(f"{field} holds negative values (expected spike times >= 0)")
    if sorted_required and (np.diff(times_s) < 0).any():
        raise ValueError(
            f"{field} is not sorted (expected non-decreasing spike times, as Kilosort writes them)"
        )


def _check_stop(t_stop: float | None, times_s: np.ndarray, field: str) -> None:
    """A stored recording end must come after the last spike."""
    if t_stop is not None and t_stop <= times_s.max():
        raise ValueError(
            f"{field} = {t_stop:g} s is not after the last spike ({times_s.max():g} s) "
            "(expected the recording end in seconds)"
        )


def _check_clusters(clusters: np.ndarray, field: str, n_spikes: int, times_field: str) -> None:
    if clusters.dtype.kind not in "iu":
        raise ValueError(f"{field} has dtype {clusters.dtype} (expected integer unit ids)")
    if clusters.shape[0] != n_spikes:
        raise ValueError(
            f"{field} has {clusters.shape[0]} entries but {times_field} has {n_spikes} "
            "(expected one unit id per spike)"
        )


def _finish(rec: Recording, min_rate_hz: float | None) -> Recording:
    """Apply the rate selection, then reject an empty recording or units without spikes."""
    if rec.spikes.sum() == 0:
        raise ValueError("no spikes in the selected units and time range (empty recording)")
    if min_rate_hz is not None:
        rec = rec.select(min_rate_hz=min_rate_hz)
    silent = [
        u for u, c in zip(rec.unit_ids, rec.spikes.sum(dim=1).tolist(), strict=True) if c == 0
    ]
    if silent:
        raise ValueError(
            f"unit(s) {format_ids(silent)} have no spikes in the selected time range "
            "(expected >= 1 spike per unit; leave them out with unit_ids=... or min_rate_hz > 0)"
        )
    return rec


def _bin_selected(
    times_s: np.ndarray,
    clusters: np.ndarray,
    dt_ms: float,
    *,
    available: np.ndarray,
    span: tuple[float, float | None],
    selection: tuple[Sequence[int] | None, float | None, float | None, float | None],
) -> Recording:
    """Bin validated spike times with the common selection.

    ``available`` lists the file's unit ids; ``span`` is the recording's (start, stop) in
    seconds, stop None when the file does not store it (then binning runs to the last spike);
    ``selection`` is the reader's (unit_ids, min_rate_hz, t_start_s, t_stop_s).
    """
    unit_ids, min_rate_hz, t_start_s, t_stop_s = selection
    dt_s = check_dt(dt_ms) / 1000
    span_start, span_stop = span
    if unit_ids is not None:
        missing = sorted(set(int(u) for u in unit_ids) - set(available.tolist()))
        if missing:
            raise ValueError(
                f"unit ids {format_ids(missing)} not found (available: {format_ids(available)})"
            )
    if t_start_s is not None and t_start_s < span_start - EDGE_TOL * dt_s:
        raise ValueError(
            f"t_start_s={t_start_s:g} s is before the recording start ({span_start:g} s)"
        )
    if t_stop_s is not None and span_stop is not None and t_stop_s > span_stop + EDGE_TOL * dt_s:
        raise ValueError(f"t_stop_s={t_stop_s:g} s is after the recording end ({span_stop:g} s)")
    rec = bin_spike_times(
        times_s,
        clusters,
        dt_ms,
        t_start_s=span_start if t_start_s is None else t_start_s,
        t_stop_s=span_stop if t_stop_s is None else t_stop_s,
        unit_ids=available if unit_ids is None else unit_ids,
    )
    return _finish(rec, min_rate_hz)


def read_raster(
    path: PathLike,
    dt_ms: float,
    *,
    unit_ids: Sequence[int] | None = None,
    min_rate_hz: float | None = None,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
) -> Recording:
    """Read a binned raster: ``.npy`` or ``.pt`` [N, T] spike counts (bool, int or float).

    ``dt_ms`` is the raster's bin width (ms). Units get ids 0..N-1 (row numbers); the first bin
    starts at 0 s.
    """
    path = _existing_file(path)
    with _naming(path):
        if path.suffix == ".npy":
            counts = _load_npy(path)
        elif path.suffix == ".pt":
            loaded = load_tensor(path, "a [N, T] tensor of spike counts")
            counts = (loaded.float() if loaded.is_floating_point() else loaded).numpy()
        else:
            raise ValueError("unknown raster suffix (expected .npy or .pt)")
        check_counts(counts, "raster")
        rec = Recording(
            torch.from_numpy(counts.astype(np.float32)),
            dt_ms,
            list(range(len(counts))),
            0.0,
            str(path),
        )
        if t_start_s is not None or t_stop_s is not None:
            rec = rec.time_slice(t_start_s, t_stop_s)
        if unit_ids is not None:
            rec = rec.select(unit_ids)
        return _finish(rec, min_rate_hz)


def read_spike_times(
    path: PathLike,
    dt_ms: float,
    *,
    unit_ids: Sequence[int] | None = None,
    min_rate_hz: float | None = None,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
) -> Recording:
    """Read spike times from an ``.npz`` archive and bin them at ``dt_ms`` (ms).

    Arrays: ``spike_times`` [S] in seconds (non-decreasing, >= 0), ``spike_clusters`` [S]
    integer unit ids, and optionally ``t_stop``: the recording end in seconds (written by
    `write_spike_times`); without it binning runs up to the bin of the last spike.
    """
    path = _existing_file(path)
    with _naming(path):
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as err:
            raise ValueError(f"cannot read as an .npz archive ({err})") from err
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("is a single array (expected an .npz archive of named arrays)")
        with archive:
            if "spike_times" not in archive.files:
                raise ValueError("missing array 'spike_times' (expected spike times in seconds)")
            if "spike_clusters" not in archive.files:
                raise ValueError(
                    "missing array 'spike_clusters' "
                    "(expected integer unit ids, same length as 'spike_times')"
                )
            times = _column(archive["spike_times"], "array 'spike_times'")
            clusters = _column(archive["spike_clusters"], "array 'spike_clusters'")
            t_stop = archive["t_stop"] if "t_stop" in archive.files else None
        if times.dtype.kind not in "iuf":
            raise ValueError(
                f"array 'spike_times' has dtype {times.dtype} (expected spike times in seconds)"
            )
        times = times.astype(np.float64)
        _check_spike_times(times, "array 'spike_times'", sorted_required=True)
        _check_clusters(clusters, "array 'spike_clusters'", times.size, "'spike_times'")
        if t_stop is not None:
            if t_stop.shape != () or t_stop.dtype.kind not in "iuf" or not np.isfinite(t_stop):
                raise ValueError(
                    "array 't_stop' is not a finite number (expected the recording end in seconds)"
                )
            t_stop = float(t_stop)
            _check_stop(t_stop, times, "array 't_stop'")
        rec = _bin_selected(
            times,
            clusters,
            dt_ms,
            available=np.unique(clusters),
            span=(0.0, t_stop),
            selection=(unit_ids, min_rate_hz, t_start_s, t_stop_s),
        )
        rec.source = str(path)
        return rec


def _read_params(folder: Path) -> dict[str, Any]:
    """The literal assignments of a phy ``params.py``, parsed with `ast` (never executed)."""
    path = folder / "params.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder}: missing params.py (expected a phy params file with 'sample_rate = ...')"
        )
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"params.py is not a valid Python file ({err})") from err
    params: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):
                continue  # not a literal (e.g. a path built by a call); spikefit needs none such
    return params


def _number(params: dict[str, Any], key: str) -> float | None:
    """A positive finite number from params.py, None when absent."""
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"params.py: '{key}' = {value!r} (expected a positive number)")
    return float(value)


def _clusters_in_groups(folder: Path, groups: Sequence[str]) -> set[int]:
    """Ids of the clusters whose phy label (``group`` column) is one of ``groups``."""
    for name in ("cluster_group.tsv", "cluster_info.tsv"):
        path = folder / name
        if path.is_file():
            break
    else:
        raise ValueError(
            f"groups={tuple(groups)} needs cluster_group.tsv or cluster_info.tsv "
            "(phy cluster labels); found neither"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        id_column = "cluster_id" if "cluster_id" in columns else "id"
        if id_column not in columns or "group" not in columns:
            raise ValueError(
                f"{name} has columns {columns} "
                "(expected tab-separated columns 'cluster_id' and 'group')"
            )
        rows = list(reader)
    try:
        return {int(row[id_column]) for row in rows if row["group"] in groups}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: column '{id_column}' holds a non-integer id ({err})") from err


def read_phy(
    folder: PathLike,
    dt_ms: float,
    *,
    groups: Sequence[str] | None = None,
    unit_ids: Sequence[int] | None = None,
    min_rate_hz: float | None = None,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
) -> Recording:
    """Read a Kilosort/phy output folder and bin its spikes at ``dt_ms`` (ms).

    Uses ``spike_times.npy`` (integer sample indices, non-decreasing), ``spike_clusters.npy``
    (or, before any curation, ``spike_templates.npy``) and ``params.py`` (``sample_rate`` in Hz;
    parsed, never executed). ``groups``, e.g. ``("good",)``, keeps only clusters with those
    labels in ``cluster_group.tsv`` (or ``cluster_info.tsv``). ``dt_ms`` must be at least one
    sample. A ``t_stop`` entry in params.py (seconds, written by `write_phy`) sets the
    recording end; without it binning runs up to the bin of the last spike.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    with _naming(folder):
        if not folder.is_dir():
            raise ValueError("is not a folder (expected a Kilosort/phy output folder)")
        params = _read_params(folder)
        sample_rate = _number(params, "sample_rate")
        if sample_rate is None:
            raise ValueError(
                "params.py: missing 'sample_rate' (expected a line 'sample_rate = 30000.0', "
                "in samples per second)"
            )
        t_stop = _number(params, "t_stop")
        sample_ms = 1000 / sample_rate
        if check_dt(dt_ms) < sample_ms * (1 - EDGE_TOL):
            raise ValueError(
                f"dt_ms={dt_ms:g} is finer than one sample ({sample_ms:.6g} ms at "
                f"sample_rate={sample_rate:g} Hz)"
            )
        samples = _column(_load_npy(folder / "spike_times.npy"), "spike_times.npy")
        if samples.dtype.kind not in "iu":
            raise ValueError(
                f"spike_times.npy has dtype {samples.dtype} (expected integer sample indices)"
            )
        cluster_file = "spike_clusters.npy"
        if not (folder / cluster_file).is_file() and (folder / "spike_templates.npy").is_file():
            cluster_file = "spike_templates.npy"
        clusters = _column(_load_npy(folder / cluster_file), cluster_file)
        times = samples.astype(np.float64) / sample_rate
        _check_spike_times(times, "spike_times.npy", sorted_required=True)
        _check_stop(t_stop, times, "params.py 't_stop'")
        _check_clusters(clusters, cluster_file, times.size, "spike_times.npy")
        if groups is not None:
            groups = (groups,) if isinstance(groups, str) else tuple(groups)
            keep = np.isin(clusters, list(_clusters_in_groups(folder, groups)))
            if not keep.any():
                raise ValueError(f"no spikes in clusters labelled {groups}")
            times, clusters = times[keep], clusters[keep]
        rec = _bin_selected(
            times,
            clusters,
            dt_ms,
            available=np.unique(clusters),
            span=(0.0, t_stop),
            selection=(unit_ids, min_rate_hz, t_start_s, t_stop_s),
        )
        rec.source = str(folder)
        return rec


def _nwb_units(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Unit ids, flat spike times (s), per-unit end offsets and obs_intervals of an NWB file."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError as err:
        raise ImportError('NWB files need pynwb: pip install "spikefit[nwb]"') from err
    try:
        with NWBHDF5IO(str(path), "r") as io:
            units = io.read().units
            columns = () if units is None else units.colnames
            if "spike_times" in columns:
                ids = np.asarray(units.id.data[:])
                times = np.asarray(units.spike_times.data[:], dtype=np.float64)
                ends = np.asarray(units.spike_times_index.data[:])
            intervals = None
            if "obs_intervals" in columns:
                intervals = np.asarray(units.obs_intervals.data[:], dtype=np.float64)
    except Exception as err:
        raise ValueError(f"cannot read as an NWB file ({err})") from err
    if "spike_times" not in columns:
        raise ValueError(
            "has no Units table with a 'spike_times' column (expected spike-sorted units, "
            "spike times in seconds)"
        )
    return ids, times, ends, intervals


def read_nwb(
    path: PathLike,
    dt_ms: float,
    *,
    unit_ids: Sequence[int] | None = None,
    min_rate_hz: float | None = None,
    t_start_s: float | None = None,
    t_stop_s: float | None = None,
) -> Recording:
    """Read the Units table of an NWB file (needs pynwb) and bin its spikes at ``dt_ms`` (ms).

    Unit ids come from the table's id column. When the table has ``obs_intervals``, the
    recording spans from their earliest start to their latest end; otherwise from 0 s up to the
    bin of the last spike.
    """
    path = _existing_file(path)
    with _naming(path):
        ids, times, ends, intervals = _nwb_units(path)
        _check_spike_times(times, "Units column 'spike_times'", sorted_required=False)
        clusters = np.repeat(ids, np.diff(ends, prepend=0))
        span: tuple[float, float | None] = (0.0, None)
        if intervals is not None and intervals.size:
            if intervals.ndim != 2 or intervals.shape[1] != 2 or not np.isfinite(intervals).all():
                raise ValueError(
                    "Units column 'obs_intervals' is malformed "
                    "(expected finite [start, stop] pairs in seconds)"
                )
            span = (float(intervals[:, 0].min()), float(intervals[:, 1].max()))
            _check_stop(span[1], times, "latest end of Units column 'obs_intervals'")
        rec = _bin_selected(
            times,
            clusters,
            dt_ms,
            available=ids,
            span=span,
            selection=(unit_ids, min_rate_hz, t_start_s, t_stop_s),
        )
        rec.source = str(path)
        return rec


def read_recording(path: PathLike, dt_ms: float, **selection: Any) -> Recording:
    """Read any supported format, chosen by the path: a folder is a Kilosort/phy output,
    ``.npz`` spike times, ``.nwb`` an NWB file, ``.npy``/``.pt`` a binned raster.

    ``selection`` goes to the reader (``unit_ids``, ``min_rate_hz``, ``t_start_s``,
    ``t_stop_s``; ``groups`` for phy). ``path`` may also be a pynapple ``TsGroup`` or a
    spikeinterface sorting (:mod:`spikefit.io.objects`).
    """
    if not isinstance(path, str | os.PathLike):
        from .objects import from_object

        recording = from_object(path, dt_ms, **selection)
        if recording is None:
            raise InputError(
                "path",
                f"a {type(path).__name__} is not a recording",
                "a file or folder path, a pynapple TsGroup or a spikeinterface sorting",
            )
        return recording
    path = Path(path)
    if path.is_dir():
        return read_phy(path, dt_ms, **selection)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or folder (expected a phy folder, .npz "
            "spike times, .nwb, or a .npy/.pt raster)"
        )
    readers = {
        ".npz": read_spike_times,
        ".nwb": read_nwb,
        ".npy": read_raster,
        ".pt": read_raster,
    }
    if path.suffix not in readers:
        raise ValueError(
            f"{path}: unknown format '{path.suffix}' "
            "(expected a phy folder, .npz spike times, .nwb, or a .npy/.pt raster)"
        )
    return readers[path.suffix](path, dt_ms, **selection)
