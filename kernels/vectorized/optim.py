"""Optimizer updates: the reference rules are whole-array NumPy expressions already, so this
backend runs them as they are (see ``reference/optim.py``)."""
from ..reference.optim import adam_update, sgd_update

__all__ = ["sgd_update", "adam_update"]
