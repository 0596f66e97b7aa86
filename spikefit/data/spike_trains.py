"""LightningDataModule serving a recorded (or simulated) raster as time chunks for likelihood
fits."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data

from spikefit.checks import InputError, in_range, non_negative, positive, whole
from spikefit.datasets import dense_to_graph
from spikefit.files import load_tensor
from spikefit.io import Recording, read_covariates, read_recording
from spikefit.io.objects import from_object
from spikefit.io.recording import check_counts

Chunk = dict[str, torch.Tensor | int | float]


class SpikeChunks(Dataset):
    """Bins ``first .. stop-1`` of a raster in chunks of ``chunk_bins`` bins. Item k is a dict:

    - ``spikes`` [N, H_k + S_k]: the chunk's S_k bins preceded by its H_k ≤ ``history_bins``
      bins of history (fewer at the start of the recording, before which all is silent);
    - ``start``: time (bin index in the recording) of column 0;
    - ``bins``: S_k, the bins whose likelihood the chunk holds (its last S_k columns);
    - ``weight``: 1, or 0 for the ``n_padding`` empty copies appended so that every process
      of a distributed run gets as many chunks as the others without counting any twice;
    - ``covariates`` [C, H_k + S_k] (with ``covariates`` [C, T]): the covariates of the same
      bins.
    """

    def __init__(
        self,
        spikes: torch.Tensor,
        first: int,
        stop: int,
        chunk_bins: int,
        history_bins: int,
        n_padding: int = 0,
        covariates: torch.Tensor | None = None,
    ) -> None:
        self.spikes, self.covariates = spikes, covariates
        self.history_bins = history_bins
        self.bounds = [(a, min(a + chunk_bins, stop)) for a in range(first, stop, chunk_bins)]
        self.n_padding = n_padding

    def __len__(self) -> int:
        return len(self.bounds) + self.n_padding

    def __getitem__(self, index: int) -> Chunk:
        if not 0 <= index < len(self):
            raise IndexError(f"chunk {index} of {len(self)}")
        a, b = self.bounds[index % len(self.bounds)]
        start = max(0, a - self.history_bins)
        chunk = {
            "spikes": self.spikes[:, start:b],
            "start": start,
            "bins": b - a,
            "weight": float(index < len(self.bounds)),
        }
        if self.covariates is not None:
            chunk["covariates"] = self.covariates[:, start:b]
        return chunk


def as_list(chunks: list[Chunk]) -> list[Chunk]:
    """Collates a batch of chunks of different lengths as a list."""
    return chunks


class SpikeTrainDataModule(L.LightningDataModule):
    """Recorded spikes for :class:`~spikefit.tasks.LikelihoodFit`: a training and a held-out
    part of the recording (in time), served as chunks of ``chunk_bins`` bins that carry the
    model's history, so no bin loses its history. Under DDP each process gets its own shard
    of chunks.

    Args:
        path: a recording in any format :func:`spikefit.io.read_recording` reads (a phy
            folder, ``.npz`` spike times, ``.nwb``, a ``.npy``/``.pt`` [N, T] raster).
        dt_ms: bin width in ms (the model's step).
        spikes: instead of ``path``, a [N, T] raster of counts, a :class:`Recording`, a
            pynapple ``TsGroup`` or a spikeinterface sorting.
        unit_ids: keep these units (in this order).
        min_rate_hz: keep units firing at ≥ this rate.
        t_start_s: start of the time range used, in seconds.
        t_stop_s: end of the time range used, in seconds.
        network: the known (e.g. simulated) network: a ``.pt``/``.npy`` dense [N, N] matrix
            indexed [pre, post], a dense tensor or a ``Data``. Ground truth for the edge
            metrics, and the graph for ``coupling="graph"`` or ``"fixed"``.
        heldout_fraction: last fraction of the bins held out (0 for none).
        chunk_bins: bins per chunk (bounds the memory of one likelihood evaluation).
        chunks_per_batch: chunks per training batch; None gives each process all its chunks
            in one batch (full-batch solvers such as L-BFGS).
        history_bins: history carried by each chunk; None asks the task being fitted
            (its model's memory).
        clip_counts: the most spikes a bin may hold: bins with more are clipped to it (1
            for a Bernoulli fit of a recording in which a few bins hold two spikes); the
            number of clipped bins is reported (``clipped_bins``). None: no clipping.
        covariates: names of external regressors to read with the spikes
            (:func:`spikefit.io.covariates.read_covariates`: each resampled to the bins by
            linear interpolation at the bin centres), in the order of the model's covariate
            weights; None: none.
        covariate_path: the ``.npz`` or ``.nwb`` file holding the covariates (default: the
            recording's ``path``).
        standardize_covariates: z-score each covariate over the recording's bins.
    """

    def __init__(
        self,
        path: str | None = None,
        dt_ms: float = 1.0,
        spikes: torch.Tensor | Recording | None = None,
        unit_ids: list[int] | None = None,
        min_rate_hz: float | None = None,
        t_start_s: float | None = None,
        t_stop_s: float | None = None,
        network: str | torch.Tensor | Data | None = None,
        heldout_fraction: float = 0.2,
        chunk_bins: int = 20_000,
        chunks_per_batch: int | None = None,
        history_bins: int | None = None,
        clip_counts: int | None = None,
        covariates: list[str] | None = None,
        covariate_path: str | None = None,
        standardize_covariates: bool = False,
    ) -> None:
        super().__init__()
        owner = self.owner = type(self).__name__
        if (path is None) == (spikes is None):
            raise InputError(
                f"{owner}.path",
                "give exactly one of path and spikes",
                "path (a recording file or folder) or spikes (a [N, T] raster or a Recording)",
            )
        positive(f"{owner}.dt_ms", dt_ms, "ms")
        if min_rate_hz is not None:
            non_negative(f"{owner}.min_rate_hz", min_rate_hz, "Hz")
        in_range(f"{owner}.heldout_fraction", heldout_fraction, 0, 1, high_open=True)
        whole(f"{owner}.chunk_bins", chunk_bins, 1)
        if chunks_per_batch is not None:
            whole(f"{owner}.chunks_per_batch", chunks_per_batch, 1)
        if history_bins is not None:
            whole(f"{owner}.history_bins", history_bins, 0)
        if clip_counts is not None:
            whole(f"{owner}.clip_counts", clip_counts, 1)
        self.clipped_bins = 0
        self.save_hyperparameters(ignore=["spikes", "network"])
        self.source = spikes
        self.network_source = network
        self.recording: Recording | None = None
        self.covariates: torch.Tensor | None = None  # [C, T] in the bins, after setup
        self.network: Data | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.recording is not None:
            return
        hp = self.hparams
        if hp.path is not None:
            selection = {
                key: hp[key]
                for key in ("unit_ids", "min_rate_hz", "t_start_s", "t_stop_s")
                if hp[key] is not None
            }
            recording = read_recording(hp.path, hp.dt_ms, **selection)
        elif isinstance(self.source, Recording):
            recording = self.source
        elif not isinstance(self.source, torch.Tensor) and (
            converted := from_object(self.source, hp.dt_ms)
        ):
            recording = converted
        else:
            raster = torch.as_tensor(self.source)
            check_counts(raster.numpy(), "data.spikes")
            recording = Recording(raster, hp.dt_ms, list(range(len(raster))))
        if not math.isclose(recording.dt, hp.dt_ms):
            raise InputError(
                f"{self.owner}.dt_ms",
                f"{hp.dt_ms:g} ms differs from the recording's bins of {recording.dt:g} ms",
                "the recording's bin",
            )
        if hp.clip_counts is not None:
            over = recording.spikes > hp.clip_counts
            self.clipped_bins = int(over.sum())
            recording = replace(recording, spikes=recording.spikes.clamp(max=hp.clip_counts))
        self.recording = recording
        self.covariates = self._read_covariates()
        self.network = self._load_network(self.network_source, f"{self.owner}.network")
        if self.network is not None and self.network.num_nodes != self.n_neurons:
            raise InputError(
                f"{self.owner}.network",
                f"{self.network.num_nodes} neurons for a recording of {self.n_neurons} units",
                "the [N, N] matrix of the recorded units",
            )
        if hp.heldout_fraction > 0 and self.n_train_bins in (0, self.recording.n_bins):
            raise InputError(
                f"{self.owner}.heldout_fraction",
                f"{hp.heldout_fraction} of "
                f"{self.recording.n_bins} bins leaves no training or held-out bin",
                "a fraction that leaves bins on both sides",
            )

    def _read_covariates(self) -> torch.Tensor | None:
        """The named covariates in the recording's bins [C, T], None without names."""
        hp = self.hparams
        if not hp.covariates:
            return None
        path = hp.covariate_path or hp.path
        if path is None:
            raise InputError(
                f"{self.owner}.covariate_path",
                "is needed for covariates of spikes given in memory",
                "the .npz or .nwb file of the covariates",
            )
        return read_covariates(path, hp.covariates, self.recording, hp.standardize_covariates)

    @staticmethod
    def _load_network(network: str | torch.Tensor | Data | None, field: str) -> Data | None:
        """The known network as a graph; errors name the file, or ``field``."""
        if network is None or isinstance(network, Data):
            return network
        if isinstance(network, str | Path):
            field = str(network)
            network = load_tensor(Path(network), "a dense [N, N] connectivity matrix")
        if network.dim() != 2 or network.shape[0] != network.shape[1]:
            raise InputError(
                field,
                f"shape {list(network.shape)} is not square",
                "a [N, N] matrix indexed [pre, post]",
            )
        if not torch.isfinite(network).all():
            raise InputError(field, "holds NaN or infinite weights", "finite weights")
        return dense_to_graph(network.float().fill_diagonal_(0))

    # ------------------------------------------------------------------ facts for the task
    @property
    def spikes(self) -> torch.Tensor:
        """The whole raster [N, T] (float32 counts)."""
        return self.recording.spikes

    @property
    def n_neurons(self) -> int:
        return self.recording.n_units

    @property
    def n_covariates(self) -> int:
        """Number C of covariates served with the chunks."""
        return 0 if self.covariates is None else len(self.covariates)

    @property
    def dt_ms(self) -> float:
        return self.recording.dt

    @property
    def n_train_bins(self) -> int:
        return round(self.recording.n_bins * (1 - self.hparams.heldout_fraction))

    @property
    def train_rates(self) -> torch.Tensor:
        """[N] mean spike count per bin of each neuron on the training bins."""
        return self.spikes[:, : self.n_train_bins].mean(dim=1)

    # ------------------------------------------------------------------ loaders
    def _chunks(self, first: int, stop: int) -> SpikeChunks:
        history = self.hparams.history_bins
        if history is None:
            if self.trainer is None:
                raise ValueError(
                    "data.history_bins is needed outside a Trainer (the task "
                    "fitted under a Trainer gives its model's memory)"
                )
            history = self.trainer.lightning_module.history_bins
        n_chunks = math.ceil((stop - first) / self.hparams.chunk_bins)
        return SpikeChunks(
            self.spikes,
            first,
            stop,
            self.hparams.chunk_bins,
            history,
            n_padding=-n_chunks % self.world_size,
            covariates=self.covariates,
        )

    @property
    def world_size(self) -> int:
        """Processes sharing the chunks (1 outside a Trainer)."""
        return self.trainer.world_size if self.trainer is not None else 1

    def train_dataloader(self) -> DataLoader:
        chunks = self._chunks(0, self.n_train_bins)
        per_batch = self.hparams.chunks_per_batch
        return DataLoader(
            chunks,
            batch_size=per_batch or len(chunks) // self.world_size,
            shuffle=per_batch is not None,
            collate_fn=as_list,
        )

    def val_dataloader(self) -> list[DataLoader]:
        """Loader 0: the training bins; loader 1 (if any): the held-out bins."""
        parts = [(0, self.n_train_bins)]
        if self.n_train_bins < self.recording.n_bins:
            parts.append((self.n_train_bins, self.recording.n_bins))
        return [DataLoader(self._chunks(*part), batch_size=1, collate_fn=as_list) for part in parts]
