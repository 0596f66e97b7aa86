"""spikefit: simulate and fit networks of stochastic spiking neurons."""

from spikefit import datasets, io, models, stimulus

__all__ = ["datasets", "io", "models", "stimulus"]
