r"""Recorded spike data: read, bin, select, split and write spike trains.

Formats: binned rasters (.npy/.pt [N, T]), spike times (.npz with ``spike_times`` in seconds
and ``spike_clusters``), Kilosort/phy folders and NWB Units tables (optional extra
``spikefit[nwb]``); pynapple ``TsGroup``\ s and spikeinterface sortings (:mod:`.objects`);
covariates resampled to the bins (:mod:`.covariates`).
"""

from .covariates import read_covariates
from .objects import from_sorting, from_tsgroup
from .readers import read_nwb, read_phy, read_raster, read_recording, read_spike_times
from .recording import Recording, bin_spike_times
from .writers import write_nwb, write_phy, write_raster, write_spike_times

__all__ = [
    "Recording",
    "bin_spike_times",
    "from_sorting",
    "from_tsgroup",
    "read_covariates",
    "read_nwb",
    "read_phy",
    "read_raster",
    "read_recording",
    "read_spike_times",
    "write_nwb",
    "write_phy",
    "write_raster",
    "write_spike_times",
]
