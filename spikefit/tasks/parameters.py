"""Per-neuron parameters: a model parameter expanded to one value per neuron."""

from __future__ import annotations

from torch import nn

from spikefit.checks import InputError


def expand_per_neuron(module: nn.Module, name: str, n: int, field: str, expected: str) -> None:
    """Gives parameter ``name`` of ``module`` one value (or one row) per neuron: a scalar
    becomes [n], a vector [A] (e.g. the weights of a filter on a basis) becomes [n, A], in
    place (optimizers that hold the parameter keep it); [n] and [n, A] stay. Raises an
    InputError naming ``field`` (``expected``: what would fit) for any other shape."""
    parameter = module.get_parameter(name)
    if parameter.dim() == 0:
        parameter.data = parameter.data.expand(n).clone()
    elif parameter.dim() == 1 and parameter.shape[0] != n:
        parameter.data = parameter.data.expand(n, -1).clone()
    if parameter.dim() > 2 or parameter.shape[0] != n:
        raise InputError(
            field,
            f"'{name}' has shape {list(parameter.shape)}, not one value per neuron [{n}]",
            expected,
        )
