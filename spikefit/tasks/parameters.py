"""Per-neuron parameters: a model parameter expanded to one value per neuron."""

from __future__ import annotations

from torch import nn

from spikefit.checks import InputError


def expand_per_neuron(module: nn.Module, name: str, n: int, field: str, expected: str) -> None:
    """Gives parameter ``name`` of ``module`` one value per neuron [n]: a scalar is repeated,
    in place (optimizers that hold the parameter keep it). Raises an InputError naming
    ``field`` (``expected``: what would fit) for any other shape than [n]."""
    parameter = module.get_parameter(name)
    if parameter.dim() == 0:
        parameter.data = parameter.data.expand(n).clone()
    if parameter.shape != (n,):
        raise InputError(
            field,
            f"'{name}' has shape {list(parameter.shape)}, not one value per neuron [{n}]",
            expected,
        )
