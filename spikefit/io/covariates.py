r"""External regressors (covariates) of a recording: a stimulus, running speed, optogenetic
pulses, read with their sample times and resampled to the spike bins.

A covariate is samples :math:`x(t_k)` at increasing times :math:`t_k` (s). Its value in bin
k, which covers :math:`[t_0 + k\Delta, t_0 + (k+1)\Delta)`, is the linear interpolation at
the bin centre :math:`t_0 + (k + \tfrac12)\Delta`, so the samples must reach from the first
bin's centre to the last one's. Sources: an ``.npz`` archive with the arrays
``covariate_<name>`` [S] (or [S, 1]) and ``covariate_<name>_times`` [S] in seconds, or an
NWB file's TimeSeries called ``<name>`` (its data with its timestamps, or its
``starting_time`` and ``rate``). Bad input raises an :class:`~spikefit.checks.InputError`
naming the file and the array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spikefit.checks import InputError

from .recording import Recording

#: What a covariate's samples must be.
SAMPLES = "finite values [S] at S strictly increasing times in seconds"


def npz_samples(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The sample times (s) and values of covariate ``name`` in the ``.npz`` archive
    ``path``: the arrays ``covariate_<name>_times`` and ``covariate_<name>``."""
    key = f"covariate_{name}"
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputError(str(path), f"cannot be read as an .npz archive ({err})", SAMPLES) from None
    with archive:
        for needed in (key, f"{key}_times"):
            if needed not in archive.files:
                raise InputError(
                    str(path), f"has no array '{needed}'", f"arrays '{key}' and '{key}_times'"
                )
        return archive[f"{key}_times"], archive[key]


def nwb_samples(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The sample times (s) and values of the TimeSeries ``name`` of the NWB file ``path``:
    its timestamps, or ``starting_time + k / rate``."""
    try:
        from pynwb import NWBHDF5IO, TimeSeries
    except ImportError as err:
        raise ImportError('NWB files need pynwb: pip install "spikefit[nwb]"') from err
    try:
        with NWBHDF5IO(str(path), "r") as io:
            found = [
                series
                for series in io.read().objects.values()
                if isinstance(series, TimeSeries) and series.name == name
            ]
            if found:
                return np.asarray(found[0].get_timestamps()), np.asarray(found[0].data[:])
    except Exception as err:
        raise InputError(str(path), f"cannot be read as an NWB file ({err})", SAMPLES) from None
    raise InputError(str(path), f"has no TimeSeries '{name}'", f"a TimeSeries named '{name}'")


def checked_samples(
    times: np.ndarray, values: np.ndarray, field: str
) -> tuple[np.ndarray, np.ndarray]:
    """``times`` and ``values`` as float64 [S] (values [S, 1] flattened), or an InputError
    naming ``field`` for another shape, non-finite entries or times not strictly increasing."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or times.shape != values.shape or values.size == 0:
        raise InputError(
            field, f"values {list(values.shape)} at times {list(times.shape)}", SAMPLES
        )
    if values.dtype.kind not in "biuf" or times.dtype.kind not in "iuf":
        raise InputError(field, f"has dtype {values.dtype} at times {times.dtype}", SAMPLES)
    times, values = times.astype(np.float64), values.astype(np.float64)
    if not (np.isfinite(times).all() and np.isfinite(values).all()):
        raise InputError(field, "holds NaN or infinite values or times", SAMPLES)
    if (np.diff(times) <= 0).any():
        raise InputError(field, "has sample times that are not strictly increasing", SAMPLES)
    return times, values


def resample(
    times: np.ndarray, values: np.ndarray, t_start_s: float, dt_ms: float, n_bins: int, field: str
) -> np.ndarray:
    r"""The covariate in each of ``n_bins`` bins of ``dt_ms`` from ``t_start_s`` [n_bins]:
    linear interpolation at the bin centres :math:`t_0 + (k + \tfrac12)\Delta`; an
    InputError naming ``field`` when the samples do not reach the first and last centre."""
    centres = t_start_s + (np.arange(n_bins) + 0.5) * dt_ms / 1000
    if times[0] > centres[0] or times[-1] < centres[-1]:
        raise InputError(
            field,
            f"samples from {times[0]:g} s to {times[-1]:g} s do not cover the recording's "
            f"bins from {t_start_s:g} s to {t_start_s + n_bins * dt_ms / 1000:g} s",
            f"samples from at most {centres[0]:g} s to at least {centres[-1]:g} s (bin centres)",
        )
    return np.interp(centres, times, values)


def read_covariates(
    path: str | Path, names: list[str], recording: Recording, standardize: bool = False
) -> torch.Tensor:
    r"""The covariates ``names`` of the ``.npz`` or ``.nwb`` file ``path`` in the bins of
    ``recording`` [C, T] (float32, :func:`resample`); ``standardize``: each minus its mean
    over the bins, over its standard deviation (a constant one only centred)."""
    path = Path(path)
    readers = {".npz": npz_samples, ".nwb": nwb_samples}
    if not path.is_file() or path.suffix not in readers:
        raise InputError(str(path), "is not an existing .npz or .nwb file", "covariates in one")
    resampled = []
    for name in names:
        field = f"{path}: covariate '{name}'"
        times, values = checked_samples(*readers[path.suffix](path, name), field)
        binned = resample(times, values, recording.t_start_s, recording.dt, recording.n_bins, field)
        if standardize:
            binned = (binned - binned.mean()) / (binned.std() or 1.0)
        resampled.append(binned)
    return torch.tensor(np.stack(resampled), dtype=torch.float32)
