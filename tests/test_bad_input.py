"""The catalogue of user mistakes: every one ends with exactly one line
``spikefit: error: <field or file>: <what is wrong> (expected …)`` and exit status 2 (or, in
Python, one exception naming the field), and leaves every file that was there untouched.
Files that hold code are refused without running it (the code would create a marker)."""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch

from spikefit.checks import InputError
from spikefit.cli import main
from spikefit.datasets import ConnectivityDataset, NormalGenerator
from spikefit.io import read_recording
from spikefit.models import BernoulliGLM, FilterGLM, PoissonGLM, RectifiedLNP
from spikefit.stimulus import LoadedStimulus, RegularStimulus
from spikefit.tasks import L2, LikelihoodFit, RateCalibration
from spikefit.tasks.calibration import SEED_INTRODUCTION

CONFIGS = Path(__file__).parent.parent / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
MARKER = "code_ran.txt"


class CodePayload:
    """Unpickling this object creates the file ``path``: code running from a loaded file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def write_code_pt(path: Path) -> Path:
    torch.save({"state_dict": CodePayload(path.parent / MARKER)}, path)
    return path


def write_npz(path: Path, times: list[float], clusters: list[int], **extra) -> Path:
    np.savez(
        path,
        spike_times=np.asarray(times, dtype=float),
        spike_clusters=np.asarray(clusters, dtype=np.int64),
        **extra,
    )
    return path


def recording(tmp_path: Path) -> Path:
    """A valid 5-unit spike-times recording of 2 s."""
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 2, 400))
    return write_npz(tmp_path / "rec.npz", times, rng.integers(0, 5, 400))


def likelihood_config(
    tmp_path: Path, data: str, model: str = "PoissonGLM", extra: str = ""
) -> Path:
    """A LikelihoodFit config on the recording ``data``."""
    models = {
        "PoissonGLM": "{alpha: 1.0, beta: 1.0, T: 5, tau: 2.0, dt: 1.0, r: 1.0, b: 0.0}",
        "BernoulliGLM": str(SEED_INTRODUCTION).replace("'", ""),
    }
    path = tmp_path / "fit.yaml"
    path.write_text(f"""model:
  class_path: spikefit.tasks.LikelihoodFit
  init_args:
    model: {{class_path: spikefit.models.{model}, init_args: {models[model]}}}
    per_neuron: [{"b" if model == "PoissonGLM" else "theta"}]
{extra}data:
  class_path: spikefit.data.SpikeTrainDataModule
  init_args: {{path: {data}, dt_ms: 1.0}}
trainer: {{max_epochs: 2}}
""")
    return path


def networks(tmp_path: Path, matrix: np.ndarray | None = None, name: str = "0.npy") -> Path:
    folder = tmp_path / "networks"
    folder.mkdir(exist_ok=True)
    if matrix is not None:
        np.save(folder / name, matrix)
    return folder


def fake_checkpoint(tmp_path: Path, task: str, state: dict | None = None) -> Path:
    """A checkpoint file as a spikefit task writes it (enough for the checks)."""
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(
        {
            "state_dict": state or {},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning.__version__,
            "spikefit": {"task": task},
        },
        folder / "last.ckpt",
    )
    return folder / "last.ckpt"


def simulate_args(tmp_path: Path, model: str, **init: float) -> list[str]:
    values = {
        "PoissonGLM": dict(alpha=15.9, beta=10.0, T=20, tau=10.0, dt=0.1, r=0.025, b=0.001),
        "RectifiedLNP": dict(lambda_0=9.8, theta=-0.002, T=20, tau=10.0, dt=0.1, r=0.025, b=0.001),
    }[model] | init
    args = [
        "simulate",
        "--model",
        f"spikefit.models.{model}",
        "--n_steps",
        "100",
        "--output",
        str(tmp_path / "out.npz"),
    ]
    for name, value in values.items():
        args += [f"--model.init_args.{name}", str(value)]
    return args


@dataclass
class Case:
    """A command line (made in a fresh folder by ``setup``) and the field it must name."""

    name: str
    setup: Callable[[Path], list[str]]
    field: str

    def __str__(self) -> str:
        return self.name


def fit(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp_path: ["fit", "--trainer.max_epochs", "2", *QUIET, *args]


FIT_FLAGS = [
    Case("negative target", fit("--model.target_rate_hz", "-5"), "model.target_rate_hz"),
    Case("NaN target", fit("--model.target_rate_hz", ".nan"), "model.target_rate_hz"),
    Case("infinite target", fit("--model.target_rate_hz", ".inf"), "model.target_rate_hz"),
    Case("zero target", fit("--model.target_rate_hz", "0"), "model.target_rate_hz"),
    Case("target not a number", fit("--model.target_rate_hz", "ten"), "model.target_rate_hz"),
    Case("unknown tuned parameter", fit("--model.tune", "[nonexistent]"), "model.tune"),
    Case("tuned parameter of another model", fit("--model.tune", "[lambda_0]"), "model.tune"),
    Case("tune not a list", fit("--model.tune", "theta"), "model.tune"),
    Case("per_neuron not tuned", fit("--model.per_neuron", "[r]"), "model.per_neuron"),
    Case("unknown solver", fit("--model.solver", "newton"), "model.solver"),
    Case("likelihood solver in a calibration", fit("--model.solver", "Newton"), "model.solver"),
    Case("negative tolerance", fit("--model.tolerance", "-0.1"), "model.tolerance"),
    Case("negative n_trials", fit("--model.n_trials", "-1"), "model.n_trials"),
    Case("max_trials below n_trials", fit("--model.max_trials", "2"), "model.max_trials"),
    Case(
        "NaN learning rate",
        fit("--model.solver", "Adam", "--model.solver.lr", ".nan"),
        "model.solver.lr",
    ),
    Case(
        "learning-rate decay above 1",
        fit("--model.solver", "Adam", "--model.solver.lr_decay", "1.5"),
        "model.solver.lr_decay",
    ),
    Case(
        "negative damping",
        fit("--model.solver", "GaussNewton", "--model.solver.damping", "-1"),
        "model.solver.damping",
    ),
    Case(
        "learning rate of Gauss-Newton",
        fit("--model.solver", "GaussNewton", "--model.solver.lr", "0.1"),
        "model.solver.lr",
    ),
    Case("damping without a solver", fit("--model.solver.damping", "0.1"), "model.solver.damping"),
    Case("empty window", fit("--model.window_steps", "0"), "model.window_steps"),
    Case("fractional window", fit("--model.window_steps", "2.5"), "model.window_steps"),
    Case(
        "negative population rate",
        fit("--model.population_rates_hz", "{excitatory: -1}", "--model.target_rate_hz", "null"),
        "model.population_rates_hz.excitatory",
    ),
    Case(
        "unknown population",
        fit("--model.population_rates_hz", "{middle: 5}"),
        "model.population_rates_hz.middle",
    ),
    Case(
        "reversed population range",
        fit(
            "--model.population_rates_hz",
            "{excitatory: 5}",
            "--model.populations",
            "{excitatory: [0.5, 0.2]}",
        ),
        "model.populations.excitatory",
    ),
    Case("unknown task option", fit("--model.bogus", "3"), "model.bogus"),
    Case("misspelt task option", fit("--model.target_rate", "3"), "model.target_rate"),
    Case("unknown top-level option", fit("--bogus", "3"), "--bogus"),
    Case("stray argument", fit("extra"), "extra"),
    Case("unknown task class", fit("--model.class_path", "Foo"), "model"),
    Case("missing task class", fit("--model.class_path", "spikefit.tasks.Foo"), "model"),
    Case("negative max_epochs", fit("--trainer.max_epochs", "-5"), "trainer.max_epochs"),
    Case("max_epochs not a number", fit("--trainer.max_epochs", "ten"), "trainer.max_epochs"),
    Case("zero devices", fit("--trainer.devices", "0"), "trainer.devices"),
    Case("NaN model theta", fit("--model.model.theta", ".nan"), "model.model.theta"),
    Case("Bernoulli dt above 1 ms", fit("--model.model.dt", "5"), "model.model.dt"),
    Case(
        "negative coupling window",
        fit("--model.model.init_args.coupling_window", "-1"),
        "model.model.coupling_window",
    ),
    Case(
        "model missing arguments", fit("--model.model", "spikefit.models.PoissonGLM"), "model.model"
    ),
    Case("unknown model option", fit("--model.model.init_args.bogus", "3"), "model.model.bogus"),
    Case("no networks", fit("--data.n_networks", "0"), "data.n_networks"),
    Case("negative batch size", fit("--data.batch_size", "-1"), "data.batch_size"),
    Case(
        "odd Dale network",
        fit("--data.generator.init_args.n_neurons", "3"),
        "data.generator.n_neurons",
    ),
    Case(
        "negative weight spread", fit("--data.generator.init_args.std", "-1"), "data.generator.std"
    ),
    Case(
        "runaway activity",
        fit(
            "--config",
            str(CONFIGS / "rectified_lnp_ring.yaml"),
            "--model.model.init_args.r",
            "-5000",
        ),
        "model.model.r",
    ),
    Case(
        "runaway PoissonGLM",
        fit(
            "--model.model",
            "spikefit.models.PoissonGLM",
            *sum(
                (
                    [f"--model.model.init_args.{k}", str(v)]
                    for k, v in dict(
                        alpha=15.9, beta=10, T=200, tau=10, dt=0.1, r=1000, b=0.001
                    ).items()
                ),
                [],
            ),
            "--model.tune",
            "[b]",
        ),
        "model.model.r",
    ),
    Case("mistyped command", lambda tmp_path: ["simulat"], "command"),
    Case("test is not a command", lambda tmp_path: ["test"], "command"),
]


def config_file(text: str) -> Callable[[Path], list[str]]:
    def make(tmp_path: Path) -> list[str]:
        (tmp_path / "run.yaml").write_text(text)
        return ["fit", "--config", str(tmp_path / "run.yaml"), *QUIET]

    return make


CONFIG_KEYS = [
    Case(
        "missing config file", lambda tmp_path: ["fit", "--config", "missing.yaml"], "missing.yaml"
    ),
    Case("malformed YAML", config_file("model:\n  target_rate_hz: 5\n bogus: [1\n"), "run.yaml"),
    Case("YAML list", config_file("- model\n- data\n"), "run.yaml"),
    Case(
        "YAML with a Python tag",
        config_file(f'model: !!python/object/apply:pathlib.Path.touch ["{MARKER}"]\n'),
        "run.yaml",
    ),
    Case("misspelt section", config_file("modle:\n  target_rate_hz: 5\n"), "modle.target_rate_hz"),
    Case("unknown key", config_file("model:\n  bogus: 1\n"), "model.bogus"),
    Case("wrong type", config_file("model:\n  target_rate_hz: ten\n"), "model.target_rate_hz"),
    Case(
        "bad model value",
        config_file(
            "model:\n  model:\n    class_path: spikefit.models.BernoulliGLM\n"
            "    init_args: {theta: 5, dt: 1, coupling_window: 5, alpha: 0.2, "
            "abs_ref_scale: 3, abs_ref_strength: -100, rel_ref_scale: -7, "
            "rel_ref_strength: -30, beta: 0.5, r: 1}\n"
        ),
        "model.model.rel_ref_scale",
    ),
]


def data_root(make: Callable[[Path], Path | None]) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        make(tmp_path)
        return ["fit", "--data.root", str(networks(tmp_path)), "--trainer.max_epochs", "1", *QUIET]

    return setup


CONNECTIVITY = [
    Case(
        "missing network folder",
        lambda tmp_path: ["fit", "--data.root", "missing_networks", *QUIET],
        "missing_networks",
    ),
    Case("empty network folder", data_root(lambda tmp_path: None), "networks"),
    Case("non-square matrix", data_root(lambda p: networks(p, np.zeros((3, 4)))), "0.npy"),
    Case("NaN weights", data_root(lambda p: networks(p, np.full((4, 4), np.nan))), "0.npy"),
    Case(
        "unreadable matrix",
        data_root(lambda p: (networks(p) / "0.npy").write_bytes(b"not a numpy file")),
        "0.npy",
    ),
    Case(
        "matrix file holding code", data_root(lambda p: write_code_pt(networks(p) / "0.pt")), "0.pt"
    ),
    Case(
        "object array",
        data_root(
            lambda p: np.save(
                networks(p) / "0.npy",
                np.array([CodePayload(p / "networks" / MARKER)], dtype=object),
                allow_pickle=True,
            )
        ),
        "0.npy",
    ),
]


#: An L2 regularizer in a LikelihoodFit config.
RIDGE = "    regularizer: {class_path: spikefit.tasks.regularizers.L2, init_args: {strength: 0}}\n"


def likelihood(
    make_data: Callable[[Path], str],
    model: str = "PoissonGLM",
    extra: str = "",
    args: tuple[str, ...] = (),
) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        return [
            "fit",
            "--config",
            str(likelihood_config(tmp_path, make_data(tmp_path), model, extra)),
            *args,
            *QUIET,
        ]

    return setup


def good(tmp_path: Path) -> str:
    return str(recording(tmp_path))


RECORDINGS = [
    Case("missing recording", likelihood(lambda p: "missing.npz"), "missing.npz"),
    Case(
        "npz without spike times",
        likelihood(lambda p: str(np.savez(p / "r.npz", spike_clusters=np.zeros(3)) or p / "r.npz")),
        "r.npz",
    ),
    Case(
        "NaN spike times",
        likelihood(lambda p: str(write_npz(p / "r.npz", [0.1, np.nan], [0, 1]))),
        "r.npz",
    ),
    Case(
        "unsorted clusters of another length",
        likelihood(lambda p: str(write_npz(p / "r.npz", [0.1, 0.2, 0.3], [0, 1]))),
        "r.npz",
    ),
    Case(
        "raster with negative counts",
        likelihood(lambda p: (np.save(p / "r.npy", -np.ones((3, 50))), str(p / "r.npy"))[1]),
        "r.npy",
    ),
    Case("raster file holding code", likelihood(lambda p: str(write_code_pt(p / "r.pt"))), "r.pt"),
    Case(
        "unknown recording format",
        likelihood(lambda p: ((p / "r.csv").write_text("1,2\n"), str(p / "r.csv"))[1]),
        "r.csv",
    ),
    Case(
        "phy folder without params.py",
        likelihood(
            lambda p: (
                p.joinpath("phy").mkdir(),
                np.save(p / "phy/spike_times.npy", np.arange(5)),
                np.save(p / "phy/spike_clusters.npy", np.zeros(5, int)),
                str(p / "phy"),
            )[-1]
        ),
        "phy",
    ),
    Case(
        "two spikes in a Bernoulli bin",
        likelihood(
            lambda p: str(write_npz(p / "r.npz", [0.1, 0.1001, 0.5, 1.0], [0, 0, 1, 1])),
            model="BernoulliGLM",
        ),
        "data.path",
    ),
    Case(
        "held-out fraction 1",
        likelihood(good, args=("--data.init_args.heldout_fraction", "1")),
        "data.heldout_fraction",
    ),
    Case(
        "negative bin width", likelihood(good, args=("--data.init_args.dt_ms", "-1")), "data.dt_ms"
    ),
    Case(
        "bins unlike the model's step",
        likelihood(good, args=("--data.init_args.dt_ms", "2")),
        "data.dt_ms",
    ),
    Case(
        "non-square true network",
        likelihood(good, args=("--data.init_args.network", "net.npy")),
        "net.npy",
    ),
    Case("unknown coupling", likelihood(good, extra="    coupling: sparse\n"), "model.coupling"),
    Case("unknown fitted parameter", likelihood(good, extra="    fit: [gamma]\n"), "model.fit"),
    Case(
        "negative Newton iterations",
        likelihood(
            good,
            extra="    solver: {class_path: spikefit.tasks.solvers.Newton, "
            "init_args: {max_iter: -1}}\n",
        ),
        "model.solver.max_iter",
    ),
    Case(
        "negative ridge strength",
        likelihood(
            good,
            extra="    regularizer: {class_path: spikefit.tasks.regularizers.L2,"
            " init_args: {strength: -1}}\n",
        ),
        "model.regularizer.strength",
    ),
    Case(
        "Newton with L1",
        likelihood(
            good,
            extra="    regularizer: {class_path: spikefit.tasks.regularizers.L1,"
            " init_args: {strength: 0.001}}\n    solver: {class_path: "
            "spikefit.tasks.solvers.Newton}\n",
        ),
        "model.regularizer",
    ),
    *[
        Case(f"fdr {value}", likelihood(good, extra=f"    fdr: {value}\n"), "model.fdr")
        for value in ("0", "1.5", ".nan")
    ],
    *[
        Case(
            f"penalty_grid {grid}",
            likelihood(good, extra=f"    penalty_grid: {grid}\n{ridge}"),
            "model.penalty_grid",
        )
        for grid, ridge in (
            ("[-1.0]", RIDGE),
            ("[]", RIDGE),
            ("[.nan]", RIDGE),
            ("[0.1]", ""),  # no regularizer to choose the strength of
        )
    ],
    Case(
        "one fold",
        likelihood(good, extra=f"    penalty_grid: [0.1]\n    cv_folds: 1\n{RIDGE}"),
        "model.cv_folds",
    ),
    *[
        Case(
            f"check_steps {value}",
            likelihood(good, extra=f"    check_steps: {value}\n"),
            "model.check_steps",
        )
        for value in ("-1", "2.5")
    ],
    Case("negative seed", likelihood(good, extra="    seed: -1\n"), "model.seed"),
    Case(
        "Newton with a shared parameter",
        likelihood(
            good, extra="    fit: [beta]\n    solver: {class_path: spikefit.tasks.solvers.Newton}\n"
        ),
        "model.fit",
    ),
]


def simulate(model: str, **init: float) -> Callable[[Path], list[str]]:
    return lambda tmp_path: simulate_args(tmp_path, model, **init)


def existing_output(tmp_path: Path) -> list[str]:
    (tmp_path / "W0.npy").write_bytes(b"the user's weights")
    return [
        "simulate",
        "--n_steps",
        "100",
        "--output",
        str(tmp_path / "out.npz"),
        "--generator.init_args.n_neurons",
        "10",
    ]


def output_under_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    return [
        "simulate",
        "--n_steps",
        "100",
        "--output",
        str(tmp_path / "notes.txt/out.npz"),
        "--generator.init_args.n_neurons",
        "10",
    ]


def simulate_fitted(tmp_path: Path, model_state: Path, network: Path | None = None) -> list[str]:
    """``simulate`` of a FilterGLM (4 functions, the default 100 ms window) loading the
    state ``model_state`` (and the network file ``network``)."""
    args = ["simulate", "--model", "spikefit.models.FilterGLM", "--model.n_basis", "4"]
    args += ["--model_state", str(model_state), "--n_steps", "10"]
    args += ["--output", str(tmp_path / "out.npz")]
    return args + (["--network", str(network)] if network is not None else [])


def state_of_other_settings(tmp_path: Path) -> list[str]:
    FilterGLM(window_ms=30, n_basis=4).save(tmp_path / "m.pt")  # T = 30 steps, not 100
    return simulate_fitted(tmp_path, tmp_path / "m.pt")


def network_file_of_a_matrix(tmp_path: Path) -> list[str]:
    FilterGLM(n_basis=4).save(tmp_path / "m.pt")
    torch.save(torch.zeros(3, 3), tmp_path / "net.pt")
    return simulate_fitted(tmp_path, tmp_path / "m.pt", tmp_path / "net.pt")


def log_dir_under_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    return [
        "fit",
        "--trainer.default_root_dir",
        str(tmp_path / "notes.txt" / "runs"),
        "--trainer.max_epochs",
        "1",
        *QUIET,
    ]


MODELS_AND_OUTPUTS = [
    Case(
        "NaN theta", lambda tmp_path: ["simulate", "--model.init_args.theta", ".nan"], "model.theta"
    ),
    Case("negative coupling time constant", simulate("PoissonGLM", tau=-5), "model.tau"),
    Case("zero coupling time constant", simulate("PoissonGLM", tau=0), "model.tau"),
    Case("negative rate scale", simulate("PoissonGLM", alpha=-1), "model.alpha"),
    Case("negative gain", simulate("RectifiedLNP", lambda_0=-1), "model.lambda_0"),
    Case("fractional window", simulate("RectifiedLNP", T=2.5), "model.T"),
    Case("no steps", lambda tmp_path: ["simulate", "--n_steps", "0"], "n_steps"),
    Case(
        "sparsity above 1",
        lambda tmp_path: ["simulate", "--generator.init_args.sparsity", "2"],
        "generator.sparsity",
    ),
    Case(
        "unknown output format",
        lambda tmp_path: ["simulate", "--output", str(tmp_path / "out.csv")],
        "output",
    ),
    Case("existing W0.npy", existing_output, "W0.npy"),
    Case("output under a file", output_under_a_file, "notes.txt"),
    Case("log folder under a file", log_dir_under_a_file, "notes.txt/runs"),
    Case(
        "missing network folder",
        lambda tmp_path: ["simulate", "--network", "missing_networks"],
        "missing_networks",
    ),
    Case("unknown simulate option", lambda tmp_path: ["simulate", "--steps", "5"], "--steps"),
    Case("model state of other settings", state_of_other_settings, "m.pt"),
    Case("network file holding a matrix", network_file_of_a_matrix, "net.pt"),
]


def checkpoint_case(make: Callable[[Path], Path | str]) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        return ["fit", "--ckpt_path", str(make(tmp_path)), "--trainer.max_epochs", "1", *QUIET]

    return setup


CHECKPOINTS = [
    Case("missing checkpoint", checkpoint_case(lambda p: "missing.ckpt"), "missing.ckpt"),
    Case(
        "checkpoint holding code",
        checkpoint_case(lambda p: write_code_pt(p / "run.ckpt")),
        "run.ckpt",
    ),
    Case(
        "model state dict as checkpoint",
        checkpoint_case(
            lambda p: (BernoulliGLM(**SEED_INTRODUCTION).save(p / "m.pt"), p / "m.pt")[1]
        ),
        "m.pt",
    ),
    Case("no run to resume", checkpoint_case(lambda p: "last"), "ckpt_path"),
    Case(
        "last run is another task's",
        checkpoint_case(lambda p: (fake_checkpoint(p, "LikelihoodFit"), "last")[1]),
        "ckpt_path",
    ),
    Case(
        "checkpoint of another task",
        checkpoint_case(lambda p: fake_checkpoint(p, "LikelihoodFit")),
        "ckpt_path",
    ),
    Case(
        "checkpoint of another model",
        checkpoint_case(
            lambda p: fake_checkpoint(p, "RateCalibration", {"model.lambda_0": torch.ones(())})
        ),
        "ckpt_path",
    ),
]

#: Samples of a covariate that cover the 2-s recording of ``good``.
SPEED_TIMES = np.linspace(0, 2.5, 251)
SPEED = np.sin(SPEED_TIMES)


def with_covariate(**arrays: object) -> Callable[[Path], list[str]]:
    """A fit of the ``good`` recording with the covariate ``speed`` of cov.npz (``arrays``)."""

    def make_data(tmp_path: Path) -> str:
        np.savez(tmp_path / "cov.npz", **arrays)
        return good(tmp_path)

    covariate = ("--data.init_args.covariates", "[speed]")
    return likelihood(make_data, args=(*covariate, "--data.init_args.covariate_path", "cov.npz"))


COVARIATES = [
    Case("covariate without sample times", with_covariate(covariate_speed=SPEED), "cov.npz"),
    Case(
        "covariate times not increasing",
        with_covariate(covariate_speed=SPEED, covariate_speed_times=SPEED_TIMES[::-1]),
        "cov.npz",
    ),
    Case(
        "NaN covariate",
        with_covariate(
            covariate_speed=np.where(SPEED > 0.5, np.nan, SPEED), covariate_speed_times=SPEED_TIMES
        ),
        "cov.npz",
    ),
    Case(
        "covariate not covering the recording",
        with_covariate(covariate_speed=SPEED, covariate_speed_times=SPEED_TIMES + 0.5),
        "cov.npz",
    ),
    Case(
        "covariate of two columns",
        with_covariate(covariate_speed=np.ones((251, 2)), covariate_speed_times=SPEED_TIMES),
        "cov.npz",
    ),
    Case(
        "covariate the model has no filter for",
        with_covariate(covariate_speed=SPEED, covariate_speed_times=SPEED_TIMES),
        "data.covariates",
    ),
]

CATALOGUE = (
    FIT_FLAGS
    + CONFIG_KEYS
    + CONNECTIVITY
    + RECORDINGS
    + COVARIATES
    + MODELS_AND_OUTPUTS
    + CHECKPOINTS
)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the hash of its content ('dir' for folders)."""
    return {
        str(path.relative_to(root)): "dir"
        if path.is_dir()
        else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("case", CATALOGUE, ids=str)
def test_command_line_mistake_is_one_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = case.setup(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("spikefit: error: "), lines
    field = lines[0].removeprefix("spikefit: error: ").split(": ", 1)[0]
    assert field == case.field or field.endswith("/" + case.field), lines[0]
    assert " (expected " in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # nothing written, changed or left behind
    assert not (tmp_path / MARKER).exists() and not list(tmp_path.rglob(MARKER))


def test_catalogue_size():
    assert len(CATALOGUE) + len(PYTHON_API) >= 60


def test_code_payloads_would_run_if_loaded_unsafely(tmp_path):
    """The payload of the catalogue is real: an unsafe load runs it."""
    torch.load(write_code_pt(tmp_path / "x.pt"), weights_only=False)
    assert (tmp_path / MARKER).exists()


def python_case(call: Callable[[Path], object], error: type, field: str):
    return pytest.param(call, error, field, id=field)


def self_loop_graph():
    data = NormalGenerator(10, mean=0.0, std=5.0, glorot=True, seed=0).generate(1)[0]
    data.edge_index = torch.cat([data.edge_index, torch.tensor([[0], [0]])], 1)
    data.W0 = torch.cat([data.W0, torch.ones(1)])
    return data


def load_code(tmp_path: Path) -> None:
    BernoulliGLM(**SEED_INTRODUCTION).load(write_code_pt(tmp_path / "m.pt"))


def differing_save(tmp_path: Path) -> None:
    NormalGenerator(10, mean=0.0, std=5.0, seed=1).save(2, tmp_path / "w")
    NormalGenerator(10, mean=0.0, std=5.0, seed=2).save(2, tmp_path / "w")


PYTHON_API = [
    python_case(
        lambda p: BernoulliGLM(**{**SEED_INTRODUCTION, "dt": 2}), InputError, "BernoulliGLM.dt"
    ),
    python_case(
        lambda p: PoissonGLM(alpha=1, beta=1, T=5, tau=0, dt=1, r=1, b=0),
        InputError,
        "PoissonGLM.tau",
    ),
    python_case(
        lambda p: RectifiedLNP(lambda_0=-1, theta=0, T=5, tau=1, dt=1, r=1, b=0),
        InputError,
        "RectifiedLNP.lambda_0",
    ),
    python_case(
        lambda p: BernoulliGLM(**SEED_INTRODUCTION).simulate(
            NormalGenerator(10, mean=0.0, std=1.0).generate(1)[0], 0
        ),
        ValueError,
        "n_steps",
    ),
    python_case(
        lambda p: BernoulliGLM(**SEED_INTRODUCTION).simulate(self_loop_graph(), 10),
        ValueError,
        "edge_index",
    ),
    python_case(lambda p: BernoulliGLM(**SEED_INTRODUCTION).add_stimulus(5), TypeError, "stimulus"),
    python_case(
        lambda p: RegularStimulus(
            strength=1, period=-1, tau=1, stop=10, stimulus_masks=torch.ones(5, dtype=torch.bool)
        ),
        InputError,
        "RegularStimulus.period",
    ),
    python_case(
        lambda p: RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), tune=["nope"]),
        InputError,
        "RateCalibration.tune",
    ),
    python_case(
        lambda p: LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), coupling="x"),
        InputError,
        "LikelihoodFit.coupling",
    ),
    *[
        python_case(
            lambda p, fdr=fdr: LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), fdr=fdr),
            InputError,
            "LikelihoodFit.fdr",
        )
        for fdr in (0, 1.5, float("nan"))
    ],
    *[
        python_case(
            lambda p, steps=steps: LikelihoodFit(
                BernoulliGLM(**SEED_INTRODUCTION), check_steps=steps
            ),
            InputError,
            "LikelihoodFit.check_steps",
        )
        for steps in (-1, 2.5)
    ],
    *[
        python_case(
            lambda p, grid=grid: LikelihoodFit(
                BernoulliGLM(**SEED_INTRODUCTION), regularizer=L2(0.0), penalty_grid=grid
            ),
            InputError,
            "LikelihoodFit.penalty_grid",
        )
        for grid in ([-1.0], [], [float("nan")])
    ],
    python_case(
        lambda p: LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), penalty_grid=[0.1]),
        InputError,
        "LikelihoodFit.penalty_grid",
    ),
    python_case(
        lambda p: LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), cv_folds=1),
        InputError,
        "LikelihoodFit.cv_folds",
    ),
    python_case(
        lambda p: LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), seed=-1),
        InputError,
        "LikelihoodFit.seed",
    ),
    python_case(lambda p: read_recording(p / "missing.npz", 1.0), FileNotFoundError, "missing.npz"),
    python_case(lambda p: ConnectivityDataset(p / "missing"), InputError, "missing"),
    python_case(differing_save, FileExistsError, "0.pt"),
    python_case(load_code, Exception, "m.pt"),
    python_case(lambda p: LoadedStimulus(write_code_pt(p / "s.pt")), InputError, "s.pt"),
]


@pytest.mark.parametrize("call, error, field", PYTHON_API)
def test_python_api_mistake_names_its_field(call, error, field, tmp_path):
    before = None
    with pytest.raises(error) as info:
        if field == "0.pt":  # the first save is the user's: it must survive the second
            NormalGenerator(10, mean=0.0, std=5.0, seed=1).save(2, tmp_path / "w")
            before = snapshot(tmp_path)
        call(tmp_path)
    message = str(info.value)
    assert "\n" not in message and field in message.split(": ")[0] + ": " + message, message
    assert not list(tmp_path.rglob(MARKER))
    if before is not None:
        assert snapshot(tmp_path) == before
