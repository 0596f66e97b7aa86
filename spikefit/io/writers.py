"""Writers of (simulated) spike counts in the formats that `spikefit.io.readers` read.

Each takes ``spikes``, a [N, T] tensor or array of non-negative integer counts (bins of
``dt_ms`` ms from 0 s). A spike in bin k is written at the bin's left edge, k·dt, so reading the
file back at the same ``dt_ms`` gives the identical raster. The writers also store the recording
end (T·dt), so trailing empty bins survive. Nothing existing is replaced unless
``overwrite=True``; files are written to a temporary name and moved into place only when
complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .recording import EDGE_TOL, Recording, check_counts, check_dt

PathLike = str | os.PathLike[str]
Spikes = torch.Tensor | np.ndarray


def _counts(spikes: Spikes) -> np.ndarray:
    """``spikes`` as a numpy array (dtype kept), checked to hold [N, T] counts."""
    if isinstance(spikes, torch.Tensor):
        spikes = spikes.detach().cpu()
        spikes = (spikes.float() if spikes.is_floating_point() else spikes).numpy()
    counts = np.asarray(spikes)
    check_counts(counts, "spikes")
    return counts


def _recording(spikes: Spikes, dt_ms: float, unit_ids: Sequence[int] | None) -> Recording:
    counts = _counts(spikes)
    ids = list(range(len(counts))) if unit_ids is None else list(unit_ids)
    return Recording(torch.from_numpy(counts.astype(np.float32)), dt_ms, ids)


def _target(path: PathLike, suffixes: tuple[str, ...], overwrite: bool) -> Path:
    """Check the file name's suffix and that it may be written; create its parent folder."""
    path = Path(path)
    if path.suffix not in suffixes:
        raise ValueError(f"{path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``, moved onto ``path`` if the block succeeds."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_raster(path: PathLike, spikes: Spikes, *, overwrite: bool = False) -> Path:
    """Write the [N, T] counts as a ``.npy`` array or a ``.pt`` tensor (dtype kept)."""
    path = _target(path, (".npy", ".pt"), overwrite)
    counts = np.ascontiguousarray(_counts(spikes))
    with _atomic(path) as tmp, tmp.open("wb") as f:
        if path.suffix == ".npy":
            np.save(f, counts)
        else:
            torch.save(torch.from_numpy(counts), f)
    return path


def write_spike_times(
    path: PathLike,
    spikes: Spikes,
    dt_ms: float,
    unit_ids: Sequence[int] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write an ``.npz`` with ``spike_times`` (s, float64), ``spike_clusters`` (int64 ids,
    default row numbers) and ``t_stop`` (recording end, s)."""
    path = _target(path, (".npz",), overwrite)
    rec = _recording(spikes, dt_ms, unit_ids)
    times, units = rec.to_spike_times()
    with _atomic(path) as tmp, tmp.open("wb") as f:
        np.savez(f, spike_times=times, spike_clusters=units, t_stop=np.float64(rec.t_stop_s))
    return path


def write_phy(
    folder: PathLike,
    spikes: Spikes,
    dt_ms: float,
    sample_rate: float = 30000.0,
    unit_ids: Sequence[int] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a minimal Kilosort/phy folder: ``spike_times.npy`` (int64 samples),
    ``spike_clusters.npy`` (int64 ids, default row numbers) and ``params.py``.

    A spike in bin k lands on the first sample at or after k·dt (``ceil(k·dt·sample_rate)``,
    equal to ``round`` when a bin holds a whole number of samples), so it stays in bin k.
    params.py holds ``sample_rate`` (Hz), the standard phy fields (no raw data file) and
    ``t_stop``, the recording end in seconds. ``dt_ms`` must be at least one sample. The folder
    must be empty or new unless ``overwrite=True`` (which replaces these three files only).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.exists() and not overwrite and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} is not empty (holds {next(folder.iterdir()).name}); "
            "pass overwrite=True to replace its spike files"
        )
    sample_rate = float(sample_rate)
    if not 0 < sample_rate < np.inf:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if check_dt(dt_ms) < 1000 / sample_rate * (1 - EDGE_TOL):
        raise ValueError(
            f"dt_ms={dt_ms:g} is finer than one sample ({1000 / sample_rate:.6g} ms at "
            f"sample_rate={sample_rate:g} Hz)"
        )
    rec = _recording(spikes, dt_ms, unit_ids)
    times, units = rec.to_spike_times()
    samples = np.ceil(times * sample_rate - EDGE_TOL).astype(np.int64)
    params = (
        "# phy parameters written by spikefit (spike times only, no raw data file)\n"
        "dat_path = []\n"
        "n_channels_dat = 0\n"
        "dtype = 'int16'\n"
        "offset = 0\n"
        f"sample_rate = {sample_rate!r}\n"
        "hp_filtered = False\n"
        "# recording end in seconds (read by spikefit)\n"
        f"t_stop = {rec.t_stop_s!r}\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("spike_times.npy", samples), ("spike_clusters.npy", units)):
        with _atomic(folder / name) as tmp, tmp.open("wb") as f:
            np.save(f, array)
    with _atomic(folder / "params.py") as tmp:
        tmp.write_text(params)
    return folder


def write_nwb(
    path: PathLike,
    spikes: Spikes,
    dt_ms: float,
    unit_ids: Sequence[int] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write an NWB file (needs pynwb) whose Units table holds each unit's spike times (s),
    ids (default row numbers) and ``obs_intervals`` [[0, T·dt]]."""
    try:
        from pynwb import NWBHDF5IO, NWBFile
    except ImportError as err:
        raise ImportError('NWB files need pynwb: pip install "spikefit[nwb]"') from err
    path = _target(path, (".nwb",), overwrite)
    rec = _recording(spikes, dt_ms, unit_ids)
    nwb = NWBFile(
        session_description="spike counts written by spikefit",
        identifier=str(uuid.uuid4()),
        session_start_time=datetime.now(timezone.utc),
    )
    counts = rec.spikes.round().to(torch.int64).numpy()
    for unit_id, row in zip(rec.unit_ids, counts, strict=True):
        bins = np.flatnonzero(row)
        times = np.repeat(bins, row[bins]) * rec.dt / 1000
        nwb.add_unit(id=unit_id, spike_times=times, obs_intervals=[[0.0, rec.t_stop_s]])
    with _atomic(path) as tmp, NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    return path
