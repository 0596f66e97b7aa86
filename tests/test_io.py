"""Tests of spikefit.io: binning, Recording selection/splitting, readers, writers, errors."""

import re
import sys

import numpy as np
import pytest
import torch

from spikefit.io import (
    Recording,
    bin_spike_times,
    read_nwb,
    read_phy,
    read_raster,
    read_recording,
    read_spike_times,
    write_nwb,
    write_phy,
    write_raster,
    write_spike_times,
)


def raster(n_units: int = 3, n_bins: int = 50, seed: int = 0) -> torch.Tensor:
    """Counts 0..3 (so some bins hold > 1 spike), every unit active, last two bins empty."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 4, (n_units, n_bins), generator=gen, dtype=torch.uint8)
    counts[:, -2:] = 0
    counts[:, 0] = 2
    return counts


def write_params(folder, text="sample_rate = 30000.0\n"):
    folder.mkdir(exist_ok=True)
    (folder / "params.py").write_text(text)


def make_phy(folder, samples, clusters, params="sample_rate = 30000.0\n"):
    write_params(folder, params)
    np.save(folder / "spike_times.npy", np.asarray(samples))
    np.save(folder / "spike_clusters.npy", np.asarray(clusters))
    return folder


def make_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- binning


def test_bin_spike_times_hand_example():
    rec = bin_spike_times([0.0005, 0.0012, 0.0031], [7, 7, 7], dt_ms=1.0)
    assert rec.unit_ids == [7]
    assert rec.spikes.tolist() == [[1, 1, 0, 1]]
    assert rec.spikes.dtype == torch.float32
    assert (rec.n_units, rec.n_bins, rec.t_start_s) == (1, 4, 0.0)
    assert rec.duration_s == pytest.approx(0.004)


def test_bins_are_left_closed_with_counts_and_unit_order():
    # edges at 0, 1, 2 ms: a spike exactly on 1 ms belongs to bin 1
    rec = bin_spike_times([0.0, 0.001, 0.001, 0.0019, 0.002], [2, 2, 5, 2, 5], dt_ms=1.0)
    assert rec.unit_ids == [2, 5]
    assert rec.spikes.tolist() == [[1, 2, 0], [0, 1, 1]]
    # given ids: that order, unknown ids give zero rows, other units dropped
    rec = bin_spike_times([0.0, 0.001, 0.002], [2, 5, 9], dt_ms=1.0, unit_ids=[5, 4, 2])
    assert rec.unit_ids == [5, 4, 2]
    assert rec.spikes.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]


def test_bin_edges_exact_at_dt_0_1():
    # spike k placed at the left edge k * 0.1 ms, as the writers do: always back in bin k
    k = np.arange(100_000)
    rec = bin_spike_times(k * 0.1 / 1000, np.zeros_like(k), dt_ms=0.1)
    assert rec.n_bins == k.size
    assert torch.all(rec.spikes == 1)


def test_bin_time_range_drops_partial_bins():
    times = [0.0005, 0.0012, 0.0031, 0.0049]
    rec = bin_spike_times(times, [1, 1, 1, 1], dt_ms=1.0, t_start_s=0.001, t_stop_s=0.0045)
    # bins [1,2), [2,3), [3,4) ms; [4, 4.5) ms is partial and dropped
    assert rec.spikes.tolist() == [[1, 0, 1]]
    assert rec.t_start_s == 0.001


def test_bin_spike_times_errors():
    with pytest.raises(ValueError, match="same length"):
        bin_spike_times([0.1, 0.2], [1], dt_ms=1.0)
    with pytest.raises(ValueError, match="dt_ms must be a positive"):
        bin_spike_times([0.1], [1], dt_ms=0.0)
    with pytest.raises(ValueError, match="coarser than the time range"):
        bin_spike_times([0.001], [1], dt_ms=10.0, t_stop_s=0.005)
    with pytest.raises(ValueError, match="integer unit ids"):
        bin_spike_times([0.1], [1.5], dt_ms=1.0)


# ---------------------------------------------------------------- Recording


def example_recording() -> Recording:
    # dt = 10 ms, 10 bins (0.1 s): unit 3 fires 5 spikes (50 Hz), unit 8 one spike (10 Hz)
    spikes = torch.zeros(2, 10)
    spikes[0, [0, 2, 4, 6]] = torch.tensor([1.0, 1.0, 2.0, 1.0])
    spikes[1, 9] = 1
    return Recording(spikes, dt=10.0, unit_ids=[3, 8], t_start_s=1.0)


def test_recording_rates_and_select():
    rec = example_recording()
    assert rec.rates_hz().tolist() == pytest.approx([50.0, 10.0])
    assert rec.select(unit_ids=[8, 3]).unit_ids == [8, 3]
    assert rec.select(unit_ids=[8]).spikes.tolist() == [[0] * 9 + [1]]
    assert rec.select(min_rate_hz=20.0).unit_ids == [3]
    assert rec.select(min_rate_hz=10.0).unit_ids == [3, 8]
    with pytest.raises(ValueError, match=r"unit ids 99 not found \(available: 3, 8\)"):
        rec.select(unit_ids=[99])
    with pytest.raises(ValueError, match="no unit fires at >= min_rate_hz=100"):
        rec.select(min_rate_hz=100.0)


def test_recording_time_slice():
    rec = example_recording()  # bins of 10 ms from 1.0 s
    part = rec.time_slice(1.015, 1.06)  # whole bins [1.02, 1.06): bins 2..5
    assert part.n_bins == 4
    assert part.t_start_s == pytest.approx(1.02)
    assert part.spikes[0].tolist() == [1, 0, 2, 0]
    assert rec.time_slice(t_start_s=1.05).n_bins == 5
    with pytest.raises(ValueError, match="reaches outside the recording"):
        rec.time_slice(0.5, 1.05)
    with pytest.raises(ValueError, match="no whole bin"):
        rec.time_slice(1.011, 1.019)


def test_recording_split():
    train, held = example_recording().split(0.2)
    assert (train.n_bins, held.n_bins) == (8, 2)
    assert held.t_start_s == pytest.approx(1.08)
    assert torch.equal(torch.cat([train.spikes, held.spikes], dim=1), example_recording().spikes)
    assert [r.n_bins for r in example_recording().split(0.25)] == [8, 2]  # round(7.5) = 8
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        example_recording().split(1.0)
    one_bin = Recording(torch.ones(1, 1), dt=1.0, unit_ids=[0])
    with pytest.raises(ValueError, match="need >= 1 each"):
        one_bin.split(0.5)


def test_recording_to_spike_times():
    times, units = example_recording().to_spike_times()
    assert times.tolist() == pytest.approx([1.0, 1.02, 1.04, 1.04, 1.06, 1.09])
    assert units.tolist() == [3, 3, 3, 3, 3, 8]


def test_recording_validation():
    with pytest.raises(ValueError, match="one id per row"):
        Recording(torch.ones(2, 3), dt=1.0, unit_ids=[0])
    with pytest.raises(ValueError, match="not unique"):
        Recording(torch.ones(2, 3), dt=1.0, unit_ids=[4, 4])
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        Recording(torch.ones(3), dt=1.0, unit_ids=[0])


# ---------------------------------------------------------------- readers


def test_read_phy_samples_at_30khz(tmp_path):
    # samples 15, 36, 93 at 30 kHz = 0.5, 1.2, 3.1 ms; Kilosort's [S, 1] uint64 column
    folder = make_phy(
        tmp_path / "ks",
        np.array([[15], [36], [93], [95]], dtype=np.uint64),
        np.array([7, 7, 7, 2], dtype=np.int32),
    )
    rec = read_phy(folder, dt_ms=1.0)
    assert rec.unit_ids == [2, 7]
    assert rec.spikes.tolist() == [[0, 0, 0, 1], [1, 1, 0, 1]]
    assert rec.source == str(folder)


def test_read_phy_groups_and_templates_fallback(tmp_path):
    folder = tmp_path / "ks"
    write_params(folder, "import os\ndat_path = os.path.join('a', 'b')\nsample_rate = 20000\n")
    np.save(folder / "spike_times.npy", np.array([0, 20, 40, 60], dtype=np.int64))
    np.save(folder / "spike_templates.npy", np.array([1, 2, 1, 3], dtype=np.uint32))
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n1\tgood\n2\tmua\n3\tnoise\n")
    assert read_phy(folder, dt_ms=1.0).unit_ids == [1, 2, 3]  # templates as clusters
    rec = read_phy(folder, dt_ms=1.0, groups=("good",))
    assert rec.unit_ids == [1]
    assert rec.spikes.tolist() == [[1, 0, 1]]
    assert read_phy(folder, dt_ms=1.0, groups=["good", "mua"]).unit_ids == [1, 2]


def test_read_phy_groups_from_cluster_info(tmp_path):
    folder = make_phy(tmp_path / "ks", [0, 30, 60], [4, 5, 4])
    (folder / "cluster_info.tsv").write_text("id\tKSLabel\tgroup\n4\tgood\tgood\n5\tmua\t\n")
    assert read_phy(folder, dt_ms=1.0, groups="good").unit_ids == [4]


def test_read_spike_times_selection(tmp_path):
    # unit 1: 4 spikes in 10 ms (t_stop stored) = 400 Hz; unit 2: 1 spike = 100 Hz
    path = make_npz(
        tmp_path / "s.npz",
        spike_times=np.array([0.0, 0.001, 0.002, 0.0025, 0.009]),
        spike_clusters=np.array([1, 1, 2, 1, 1]),
        t_stop=np.float64(0.010),
    )
    rec = read_spike_times(path, dt_ms=1.0)
    assert rec.n_bins == 10  # from t_stop, not from the last spike
    assert rec.rates_hz().tolist() == pytest.approx([400.0, 100.0])
    assert read_spike_times(path, dt_ms=1.0, min_rate_hz=200).unit_ids == [1]
    assert read_spike_times(path, dt_ms=1.0, unit_ids=[2, 1]).unit_ids == [2, 1]
    part = read_spike_times(path, dt_ms=1.0, t_start_s=0.002, t_stop_s=0.005)
    assert part.spikes.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert part.t_start_s == 0.002
    assert read_spike_times(path, dt_ms=5.0).spikes.tolist() == [[3, 1], [1, 0]]


def test_read_raster_selection(tmp_path):
    path = tmp_path / "r.npy"
    np.save(path, np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=bool))
    rec = read_raster(path, dt_ms=2.0)
    assert rec.unit_ids == [0, 1, 2]
    assert rec.rates_hz().tolist() == pytest.approx([250.0, 125.0, 500.0])
    assert read_raster(path, dt_ms=2.0, min_rate_hz=200).unit_ids == [0, 2]
    part = read_raster(path, dt_ms=2.0, unit_ids=[2, 0], t_start_s=0.002, t_stop_s=0.006)
    assert part.spikes.tolist() == [[1, 1], [0, 1]]


def test_read_recording_dispatch(tmp_path):
    spikes = raster()
    write_raster(tmp_path / "a.pt", spikes)
    write_spike_times(tmp_path / "a.npz", spikes, dt_ms=1.0)
    write_phy(tmp_path / "ks", spikes, dt_ms=1.0)
    for path in ("a.pt", "a.npz", "ks"):
        rec = read_recording(tmp_path / path, dt_ms=1.0, unit_ids=[1])
        assert torch.equal(rec.spikes, spikes[[1]].float())
    assert read_recording(tmp_path / "ks", 1.0, groups=None).n_units == 3
    with pytest.raises(ValueError, match=r"b\.txt: unknown format"):
        (tmp_path / "b.txt").write_text("")
        read_recording(tmp_path / "b.txt", 1.0)
    with pytest.raises(FileNotFoundError, match="nothing"):
        read_recording(tmp_path / "nothing.npz", 1.0)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dt_ms", [0.1, 1.0, 0.25])
@pytest.mark.parametrize("fmt", ["npy", "pt", "npz", "phy", "nwb"])
def test_round_trip(tmp_path, fmt, dt_ms):
    spikes = raster(n_units=4, n_bins=3000 if dt_ms < 1 else 300)
    ids = [10, 3, 7, 42]
    if fmt == "nwb":
        pytest.importorskip("pynwb")
        path = write_nwb(tmp_path / "s.nwb", spikes, dt_ms, unit_ids=ids)
    elif fmt == "phy":
        path = write_phy(tmp_path / "ks", spikes, dt_ms, sample_rate=30000.0, unit_ids=ids)
    elif fmt == "npz":
        path = write_spike_times(tmp_path / "s.npz", spikes, dt_ms, unit_ids=ids)
    else:
        path = write_raster(tmp_path / f"s.{fmt}", spikes)
        ids = [0, 1, 2, 3]
    rec = read_recording(path, dt_ms)
    # phy and .npz list units by increasing id, NWB in table order, rasters by row
    assert rec.unit_ids == (ids if fmt == "nwb" else sorted(ids))
    assert rec.t_start_s == 0.0
    assert torch.equal(rec.select(unit_ids=ids).spikes, spikes.float())


def test_phy_sample_placement(tmp_path):
    spikes = torch.tensor([[1, 0, 2, 1]])
    write_phy(tmp_path / "a", spikes, dt_ms=1.0, sample_rate=30000.0)
    assert np.load(tmp_path / "a" / "spike_times.npy").tolist() == [0, 60, 60, 90]
    assert np.load(tmp_path / "a" / "spike_times.npy").dtype == np.int64
    # 7.5 samples per bin: bin 1 starts at sample 7.5, so its spike goes to sample 8
    write_phy(tmp_path / "b", spikes, dt_ms=0.25, sample_rate=30000.0)
    assert np.load(tmp_path / "b" / "spike_times.npy").tolist() == [0, 15, 15, 23]
    assert torch.equal(read_phy(tmp_path / "b", 0.25).spikes, spikes.float())


def test_written_files_rebin_at_other_dt(tmp_path):
    spikes = torch.tensor([[1, 0, 2, 1, 0, 0]])
    path = write_spike_times(tmp_path / "s.npz", spikes, dt_ms=1.0)
    assert read_spike_times(path, dt_ms=2.0).spikes.tolist() == [[1, 3, 0]]
    assert read_spike_times(path, dt_ms=4.0).spikes.tolist() == [[4]]  # partial bin dropped
    with pytest.raises(ValueError, match=r"s\.npz: dt_ms=7 is coarser than the time range"):
        read_spike_times(path, dt_ms=7.0)


def test_writers_refuse_to_overwrite(tmp_path):
    spikes = raster()
    writers = {
        "r.npy": lambda p, **kw: write_raster(p, spikes, **kw),
        "r.pt": lambda p, **kw: write_raster(p, spikes, **kw),
        "s.npz": lambda p, **kw: write_spike_times(p, spikes, 1.0, **kw),
        "ks": lambda p, **kw: write_phy(p, spikes, 1.0, **kw),
    }
    for name, write in writers.items():
        path = tmp_path / name
        write(path)
        before = sorted(p.stat().st_mtime_ns for p in [path, *path.glob("*")])
        with pytest.raises(FileExistsError, match=re.escape(name)):
            write(path)
        assert sorted(p.stat().st_mtime_ns for p in [path, *path.glob("*")]) == before
        write(path, overwrite=True)
        assert torch.equal(read_recording(path, 1.0).spikes, spikes.float())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        write_phy(tmp_path / "other", spikes, 1.0)
    assert not list(tmp_path.glob("**/.*.partial*"))


def test_writer_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"s\.txt: expected a file name ending in \.npy or \.pt"):
        write_raster(tmp_path / "s.txt", raster())
    with pytest.raises(ValueError, match="spikes holds negative values"):
        write_spike_times(tmp_path / "s.npz", -torch.ones(2, 3), 1.0)
    with pytest.raises(ValueError, match="finer than one sample"):
        write_phy(tmp_path / "ks", raster(), dt_ms=0.01, sample_rate=30000.0)
    assert not (tmp_path / "ks").exists()


def test_nwb_round_trip_obs_intervals(tmp_path):
    pytest.importorskip("pynwb")
    spikes = torch.tensor([[0, 1, 0, 0], [2, 0, 0, 0]])
    path = write_nwb(tmp_path / "s.nwb", spikes, dt_ms=1.0, unit_ids=[5, 9])
    rec = read_nwb(path, dt_ms=1.0)
    assert rec.n_bins == 4 and rec.unit_ids == [5, 9]
    assert read_nwb(path, dt_ms=1.0, unit_ids=[9]).spikes.tolist() == [[2, 0, 0, 0]]
    with pytest.raises(FileExistsError, match=r"s\.nwb"):
        write_nwb(path, spikes, dt_ms=1.0)


def test_nwb_without_pynwb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)  # makes `import pynwb` fail
    (tmp_path / "s.nwb").write_bytes(b"")
    with pytest.raises(ImportError, match=re.escape('pip install "spikefit[nwb]"')):
        read_nwb(tmp_path / "s.nwb", dt_ms=1.0)
    with pytest.raises(ImportError, match=re.escape('pip install "spikefit[nwb]"')):
        write_nwb(tmp_path / "t.nwb", raster(), dt_ms=1.0)


# ---------------------------------------------------------------- bad files

GOOD_TIMES = np.array([0.001, 0.002, 0.003])
GOOD_IDS = np.array([1, 1, 2])


@pytest.mark.parametrize(
    ("arrays", "kwargs", "field", "expected"),
    [
        ({"spike_clusters": GOOD_IDS}, {}, "'spike_times'", "missing array"),
        ({"spike_times": GOOD_TIMES}, {}, "'spike_clusters'", "same length as 'spike_times'"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS[:2]}, {}, "'spike_clusters'",
         "one unit id per spike"),
        ({"spike_times": -GOOD_TIMES[::-1], "spike_clusters": GOOD_IDS}, {}, "'spike_times'",
         "negative values"),
        ({"spike_times": GOOD_TIMES[::-1], "spike_clusters": GOOD_IDS}, {}, "'spike_times'",
         "not sorted (expected non-decreasing spike times"),
        ({"spike_times": np.array([0.001, np.nan]), "spike_clusters": GOOD_IDS[:2]}, {},
         "'spike_times'", "NaN or infinite"),
        ({"spike_times": np.array([0.001, np.inf]), "spike_clusters": GOOD_IDS[:2]}, {},
         "'spike_times'", "NaN or infinite"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS + 0.5}, {}, "'spike_clusters'",
         "expected integer unit ids"),
        ({"spike_times": np.zeros(0), "spike_clusters": np.zeros(0, int)}, {}, "'spike_times'",
         "empty recording"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS}, {"unit_ids": [1, 99]},
         "unit ids 99", "not found (available: 1, 2)"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS}, {"t_stop_s": 0.0025},
         "unit(s) 2", "no spikes in the selected time range"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS}, {"dt_ms": -1.0}, "dt_ms",
         "positive bin width"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS, "t_stop": np.float64(0.002)},
         {}, "'t_stop'", "not after the last spike"),
        ({"spike_times": GOOD_TIMES, "spike_clusters": GOOD_IDS, "t_stop": np.float64(0.004)},
         {"t_stop_s": 0.005}, "t_stop_s", "after the recording end"),
    ],
)  # fmt: skip
def test_bad_npz(tmp_path, arrays, kwargs, field, expected):
    path = make_npz(tmp_path / "spikes.npz", **arrays)
    kwargs = {"dt_ms": 1.0, **kwargs}
    with pytest.raises(ValueError) as info:
        read_spike_times(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert field in message and expected in message


def test_npz_missing_and_not_an_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.npz"):
        read_spike_times(tmp_path / "none.npz", 1.0)
    np.save(tmp_path / "single.npy", GOOD_TIMES)
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(ValueError, match=r"single\.npz: is a single array"):
        read_spike_times(tmp_path / "single.npz", 1.0)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: cannot read as an \.npz archive"):
        read_spike_times(tmp_path / "junk.npz", 1.0)


@pytest.mark.parametrize(
    ("content", "kwargs", "field", "expected"),
    [
        (np.ones(5), {}, "raster", "has shape (5,)"),
        (np.ones((2, 3, 4)), {}, "raster", "has shape (2, 3, 4)"),
        (np.array([[1.0, -1.0]]), {}, "raster", "negative values"),
        (np.array([[1.0, np.nan]]), {}, "raster", "NaN or infinite"),
        (np.array([[1.0, 0.5]]), {}, "raster", "non-integer"),
        (np.zeros((2, 5)), {}, "selected units", "empty recording"),
        (np.array([[1, 0], [0, 0]]), {}, "unit(s) 1", "no spikes"),
        (np.array([[1, 1], [1, 1]]), {"unit_ids": [5]}, "unit ids 5", "not found"),
        (np.array([[1, 1], [1, 1]]), {"t_stop_s": 1.0}, "time range", "outside the recording"),
        (np.array([[1, 1], [1, 1]]), {"dt_ms": float("nan")}, "dt_ms", "positive bin width"),
    ],
)
def test_bad_raster(tmp_path, content, kwargs, field, expected):
    for suffix in (".npy", ".pt"):
        path = tmp_path / f"raster{suffix}"
        if suffix == ".npy":
            np.save(path, content)
        else:
            torch.save(torch.as_tensor(content), path)
        with pytest.raises(ValueError) as info:
            read_raster(path, **{"dt_ms": 1.0, **kwargs})
        message = str(info.value)
        assert message.startswith(f"{path}: ")
        assert field in message and expected in message


def test_raster_pt_holding_other_objects(tmp_path):
    torch.save({"spikes": torch.ones(2, 2)}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match=r"d\.pt: holds a dict \(expected a \[N, T\] tensor"):
        read_raster(tmp_path / "d.pt", 1.0)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"o\.npy: cannot read o\.npy as a \.npy array"):
        read_raster(tmp_path / "o.npy", 1.0)


@pytest.mark.parametrize(
    ("setup", "kwargs", "field", "expected"),
    [
        (lambda f: (f / "params.py").write_text("dtype = 'int16'\n"), {}, "'sample_rate'",
         "missing"),
        (lambda f: (f / "params.py").write_text("sample_rate = 'fast'\n"), {}, "'sample_rate'",
         "expected a positive number"),
        (lambda f: (f / "params.py").write_text("sample_rate = = 3\n"), {}, "params.py",
         "not a valid Python file"),
        (lambda f: np.save(f / "spike_times.npy", np.array([0, 60, 30])), {}, "spike_times.npy",
         "not sorted (expected non-decreasing spike times, as Kilosort writes them)"),
        (lambda f: np.save(f / "spike_times.npy", np.array([-3, 0, 30])), {}, "spike_times.npy",
         "negative values"),
        (lambda f: np.save(f / "spike_times.npy", np.array([0.0, 1, 2])), {}, "spike_times.npy",
         "expected integer sample indices"),
        (lambda f: np.save(f / "spike_times.npy", np.ones((3, 2), int)), {}, "spike_times.npy",
         "has shape (3, 2)"),
        (lambda f: np.save(f / "spike_clusters.npy", np.array([1, 2])), {}, "spike_clusters.npy",
         "one unit id per spike"),
        (lambda f: None, {"dt_ms": 0.02}, "dt_ms=0.02", "finer than one sample (0.0333333 ms"),
        (lambda f: None, {"groups": ("good",)}, "groups=('good',)",
         "needs cluster_group.tsv or cluster_info.tsv"),
        (lambda f: (f / "cluster_group.tsv").write_text("cid\tlabel\n1\tgood\n"),
         {"groups": ("good",)}, "cluster_group.tsv", "expected tab-separated columns"),
        (lambda f: (f / "cluster_group.tsv").write_text("cluster_id\tgroup\n1\tmua\n"),
         {"groups": ("good",)}, "labelled ('good',)", "no spikes in clusters"),
        (lambda f: None, {"unit_ids": [3]}, "unit ids 3", "not found (available: 1, 2)"),
        (lambda f: (f / "params.py").write_text("sample_rate = 30000.0\nt_stop = 0.001\n"), {},
         "params.py 't_stop'", "not after the last spike"),
    ],
)  # fmt: skip
def test_bad_phy(tmp_path, setup, kwargs, field, expected):
    folder = make_phy(tmp_path / "ks", np.array([0, 30, 60], np.int64), np.array([1, 1, 2]))
    setup(folder)
    with pytest.raises(ValueError) as info:
        read_phy(folder, **{"dt_ms": 1.0, **kwargs})
    message = str(info.value)
    assert message.startswith(f"{folder}: ")
    assert field in message and expected in message


def test_phy_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_phy(tmp_path / "none", 1.0)
    for missing in ("params.py", "spike_times.npy", "spike_clusters.npy"):
        folder = make_phy(tmp_path / missing, [0, 30], [1, 1])
        (folder / missing).unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(missing)):
            read_phy(folder, 1.0)


def test_bad_nwb(tmp_path):
    pytest.importorskip("pynwb")
    (tmp_path / "junk.nwb").write_text("not hdf5")
    with pytest.raises(ValueError, match=r"junk\.nwb: cannot read as an NWB file"):
        read_nwb(tmp_path / "junk.nwb", 1.0)
    path = write_nwb(tmp_path / "s.nwb", torch.tensor([[1, 0], [0, 0]]), 1.0, unit_ids=[4, 6])
    with pytest.raises(ValueError, match=r"s\.nwb: unit\(s\) 6 have no spikes"):
        read_nwb(path, 1.0)
    assert read_nwb(path, 1.0, min_rate_hz=1.0).unit_ids == [4]
    with pytest.raises(ValueError, match=r"s\.nwb: unit ids 5 not found \(available: 4, 6\)"):
        read_nwb(path, 1.0, unit_ids=[5])


# ---------------------------------------------------------------- objects users hold
def test_pynapple_tsgroup_bins_like_its_spike_times():
    nap = pytest.importorskip("pynapple")
    group = nap.TsGroup(
        {3: nap.Ts(t=np.array([0.0101, 0.5, 0.5004])), 7: nap.Ts(t=np.array([0.2, 1.99]))},
        time_support=nap.IntervalSet(0, 2),
    )
    rec = read_recording(group, dt_ms=1.0)
    assert rec.unit_ids == [3, 7] and rec.n_bins == 2000 and rec.source == "TsGroup"
    assert rec.spikes[0, 10] == 1 and rec.spikes[0, 500] == 2 and rec.spikes[1, 1990] == 1
    assert rec.spikes.sum() == 5
    assert read_recording(group, dt_ms=1.0, unit_ids=[7]).unit_ids == [7]


def test_spikeinterface_sorting_bins_its_samples():
    si = pytest.importorskip("spikeinterface.core")
    sorting = si.NumpySorting.from_unit_dict(
        {1: np.array([10, 300, 301]), 5: np.array([50])}, sampling_frequency=1000.0
    )
    rec = read_recording(sorting, dt_ms=2.0)
    assert rec.unit_ids == [1, 5] and rec.source == "sorting"
    assert rec.spikes[0, 5] == 1 and rec.spikes[0, 150] == 2 and rec.spikes[1, 25] == 1
    named = si.NumpySorting.from_unit_dict(
        {"a": np.array([10]), "b": np.array([20])}, sampling_frequency=1000.0
    )
    assert read_recording(named, dt_ms=1.0).unit_ids == [0, 1]  # numbered in order
    with pytest.raises(ValueError, match=r"^from_sorting\.segment_index: 3 is out of range"):
        read_recording(sorting, dt_ms=1.0, segment_index=3)


def test_an_object_that_is_no_recording_is_named():
    with pytest.raises(ValueError, match=r"^path: a list is not a recording"):
        read_recording([1, 2, 3], dt_ms=1.0)
