"""Argument validators: every user mistake raises one :class:`InputError` naming its field.

A field is a dotted name (``BernoulliGLM.theta``, ``RateCalibration.target_rate_hz``) or a
file. The command line turns the class part into the option's full name
(``model.model.theta``) and prints the error as one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

Check = Callable[[str, Any], Any]
"""A validator: ``check(field, value)`` returns the value or raises :class:`InputError`."""


def field_name(owner: object, argument: str) -> str:
    """The field ``Class.argument`` of an argument of ``owner`` (its exact class)."""
    return f"{type(owner).__name__}.{argument}"


class InputError(ValueError):
    """A bad value of ``field``: ``<field>: <problem> (expected <expected>)``.

    Args:
        field: the dotted name of the argument (``Class.argument``) or a file path.
        problem: what is wrong with the value.
        expected: the accepted form (omitted from the message when None).
    """

    def __init__(self, field: str, problem: str, expected: str | None = None) -> None:
        self.field, self.problem, self.expected = str(field), problem, expected
        super().__init__(self.describe(self.field))

    def describe(self, field: str) -> str:
        """The message with ``field`` in place of the field's name."""
        return f"{field}: {self.problem}" + (
            f" (expected {self.expected})" if self.expected else ""
        )


def _values(value: Any) -> torch.Tensor | None:
    """``value`` as a float64 tensor, or None if it is not numeric."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    try:
        return torch.as_tensor(value, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError):
        return None


def _shown(value: Any) -> str:
    """A short rendering of ``value`` for a message."""
    values = _values(value)
    if values is not None and values.dim() > 0:
        bad = values[~torch.isfinite(values)]
        return (
            f"{bad[0].item()} in {list(values.shape)} values"
            if bad.numel()
            else f"values from {values.min().item():g} to {values.max().item():g}"
        )
    return repr(value)


def finite(field: str, value: Any, unit: str = "") -> Any:
    """``value`` if it is a finite number (or tensor of finite numbers)."""
    values = _values(value)
    suffix = f" in {unit}" if unit else ""
    if values is None:
        raise InputError(field, f"{value!r} is not a number", f"a finite number{suffix}")
    if not torch.isfinite(values).all():
        raise InputError(field, f"{_shown(value)} is not finite", f"a finite number{suffix}")
    return value


def _bounded(field: str, value: Any, test, expected: str) -> Any:
    finite(field, value)
    if not bool(test(_values(value)).all()):
        raise InputError(field, f"{_shown(value)} is out of range", expected)
    return value


def satisfies(
    field: str, value: Any, test: Callable[[torch.Tensor], torch.Tensor], expected: str
) -> Any:
    """``value`` if it is finite and ``test`` holds for all its values (as float64), for a
    bound that another argument sets or that needs its reason in ``expected``."""
    return _bounded(field, value, test, expected)


def number(owner: object, argument: str, value: Any, check: Check = finite) -> float:
    """``value`` as a float if it is a single number that ``check`` accepts as the field
    ``Class.argument`` of ``owner``."""
    field = field_name(owner, argument)
    check(field, value)
    values = _values(value)
    if values.numel() != 1:
        raise InputError(field, f"{values.numel()} values", "a single number")
    return float(values.reshape(()).item())


def positive(field: str, value: Any, unit: str = "") -> Any:
    """``value`` if it is finite and > 0."""
    suffix = f" in {unit}" if unit else ""
    return _bounded(field, value, lambda v: v > 0, f"a finite number > 0{suffix}")


def non_negative(field: str, value: Any, unit: str = "") -> Any:
    """``value`` if it is finite and ≥ 0."""
    suffix = f" in {unit}" if unit else ""
    return _bounded(field, value, lambda v: v >= 0, f"a finite number ≥ 0{suffix}")


def in_range(
    field: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> Any:
    """``value`` if it is finite and within [low, high] (open ends where asked)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return _bounded(
        field,
        value,
        lambda v: (v > low if low_open else v >= low) & (v < high if high_open else v <= high),
        f"a number in {left}{low:g}, {high:g}{right}",
    )


def whole(field: str, value: Any, minimum: int = 0, unit: str = "") -> int:
    """``value`` as an int if it is a whole number ≥ ``minimum``."""
    suffix = f" {unit}" if unit else ""
    expected = f"a whole number{suffix} ≥ {minimum}"
    values = _values(value)
    if (
        values is None
        or values.dim() != 0
        or not math.isfinite(values.item())
        or values.item() != int(values.item())
    ):
        raise InputError(field, f"{value!r} is not a whole number", expected)
    if values.item() < minimum:
        raise InputError(field, f"{int(values.item())} is out of range", expected)
    return int(values.item())


def one_of(field: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise InputError(
            field,
            f"{value!r} is not a choice",
            "one of " + ", ".join(repr(choice) for choice in choices),
        )
    return value


def random_generator(field: str, rng: torch.Generator | None, seed: Any) -> torch.Generator:
    """``rng``, or a fresh generator seeded with ``seed`` (the field), never both."""
    if seed is None:
        return rng if rng is not None else torch.Generator()
    if rng is not None:
        raise InputError(field, "given together with rng", "either rng or seed, not both")
    return torch.Generator().manual_seed(whole(field, seed))
