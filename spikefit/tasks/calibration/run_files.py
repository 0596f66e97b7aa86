"""The files of a calibration: a fit's model state and recorded rates that a calibration
starts from, and the tuned model state it writes."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from typing_extensions import override

from spikefit.checks import InputError
from spikefit.files import load_tensor
from spikefit.models import BaseModel
from spikefit.tasks.callbacks import RunOutput

#: What a file of per-neuron rates holds (:func:`read_rates`).
RATES_FILE = (
    "a likelihood fit's summary.json (its posterior_predictive.recorded_rate_hz) or a "
    ".npy/.pt vector [N] of rates in Hz"
)


def load_model_state(model: BaseModel, path: Path) -> None:
    """Loads the state dict ``path`` into ``model``
    (:meth:`~spikefit.models.BaseModel.load`); an InputError naming ``path`` when another
    model saved it: other parameters, or other settings (a buffer such as the window T or
    dt differs)."""
    expected = (
        f"a state dict saved by a {type(model).__name__} with the same arguments: the fit's "
        "model, model.init_args.model in the run's config.yaml"
    )
    settings = {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if not name.startswith("stimulus.")
    }
    try:
        model.load(path)
    except RuntimeError as error:
        problem = str(error).splitlines()[-1].strip()
        raise InputError(str(path), f"does not fit the model: {problem}", expected) from None
    differ = [
        name for name, value in settings.items() if not torch.equal(value, model.get_buffer(name))
    ]
    if differ:
        raise InputError(
            str(path), f"was saved with other settings ({', '.join(differ)})", expected
        )


def read_rates(path: Path) -> list[float]:
    """The rates (Hz) of every neuron in ``path``: a likelihood fit's ``summary.json``,
    whose posterior-predictive check holds every unit's recorded rate, or a ``.npy``/``.pt``
    vector; an InputError naming ``path`` for anything else (the values are checked where
    they are used)."""
    if path.suffix != ".json":
        rates = load_tensor(path, RATES_FILE)
        if rates.dim() != 1:
            raise InputError(str(path), f"holds shape {list(rates.shape)}, not [N]", RATES_FILE)
        return rates.tolist()
    try:
        summary = json.loads(path.read_text())
    except OSError as error:
        problem = f"could not be read: {error.strerror or error}"
        raise InputError(str(path), problem, RATES_FILE) from None
    except json.JSONDecodeError as error:
        raise InputError(str(path), f"line {error.lineno}: {error.msg}", RATES_FILE) from None
    check = summary.get("posterior_predictive") if isinstance(summary, dict) else None
    rates = check.get("recorded_rate_hz") if isinstance(check, dict) else None
    if not isinstance(rates, list):
        raise InputError(str(path), "holds no posterior_predictive.recorded_rate_hz", RATES_FILE)
    return rates


class WriteTunedModel(RunOutput):
    """``tuned_model.pt``: the state dict of the task's ``model`` after the run, by the
    model's own ``save`` (what ``python -m spikefit simulate --model_state`` loads)."""

    @override
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        pl_module.model.save(log_dir / "tuned_model.pt")
