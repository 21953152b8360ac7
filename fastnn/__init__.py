"""fastnn: neural networks from scratch in NumPy and Numba, PyTorch-shaped, no autograd."""
from . import kernels, losses, models, nn, optim
from .backend import use_backend

__version__ = "0.1.0"
__all__ = ["kernels", "losses", "models", "nn", "optim", "use_backend"]
