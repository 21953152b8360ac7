"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's update rules.

``optimizer.step()`` updates every Parameter that has a gradient, in place (a float32 parameter
stays float32), with the kernels ``sgd_update`` / ``adam_update`` of the backend chosen as for
layers (``backend=``, else the one in force at the step, see ``fastnn.backend``). ``.lr`` is a plain attribute, which the schedules set once per epoch.
``state_dict()`` is a flat ``dict[str, ndarray]`` (scalars as 0-d arrays) that ``np.savez`` can
store; ``load_state_dict`` checks every key and shape before changing anything.
"""
import math

import numpy as np

from .backend import ops
from .nn import Parameter, _check_backend


def _check_nonnegative(**values):
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def _scalars_to_arrays(obj, names):
    """``{name: np.asarray(obj.name)}``: numbers become 0-d arrays, tuples 1-d arrays."""
    return {name: np.asarray(getattr(obj, name)) for name in names}


def _arrays_to_scalars(obj, names, state):
    """Check that ``state`` holds every name with the shape of ``obj``'s value; return Python values."""
    values = {}
    for name in names:
        if name not in state:
            raise ValueError(f"state_dict is missing key {name!r}")
        value = np.asarray(state[name])
        expected = np.shape(getattr(obj, name))
        if value.shape != expected:
            raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, expected {expected}")
        values[name] = value.item() if value.ndim == 0 else tuple(value.tolist())
    return values


class Optimizer:
    """Base class: holds the Parameters, ``.lr`` and one state dict per Parameter.

    Subclasses name their saved hyperparameters, describe a Parameter's state in
    ``_state_template`` and update one Parameter in ``_update``.
    """

    hyperparameters = ("lr",)

    def __init__(self, params, lr, backend=None):
        self.backend = _check_backend(backend)
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: the optimizer has nothing to update")
        for index, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise ValueError(f"params[{index}] is a {type(p).__name__}, not a Parameter")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("params holds the same Parameter more than once")
        _check_nonnegative(lr=lr)
        self.lr = lr
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        """Forget every Parameter's gradient (``.grad = None``)."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Update, in place, every Parameter whose ``.grad`` is set."""
        kernels = ops(self.backend)
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(f"gradient shape {p.grad.shape} differs from parameter shape {p.data.shape}")
            self._update(kernels, p.data, p.grad, state)

    def _update(self, kernels, w, g, state):
        """Update w with its gradient g and its state (a dict), by the ``kernels`` namespace."""
        raise NotImplementedError

    def _state_template(self, w):
        """A Parameter's state entries with their initial values (their shapes and dtypes)."""
        raise NotImplementedError

    def state_dict(self):
        """Hyperparameters as 0-d arrays, and copies of the state of Parameter i as "state.i.<name>"."""
        saved = _scalars_to_arrays(self, self.hyperparameters)
        for index, state in enumerate(self.state):
            for name, value in state.items():
                saved[f"state.{index}.{name}"] = np.array(value)
        return saved

    def load_state_dict(self, state):
        """Restore hyperparameters and per-Parameter state from ``state_dict()`` output (or its npz)."""
        state = {key: np.asarray(value) for key, value in dict(state).items()}
        hyperparameters = _arrays_to_scalars(self, self.hyperparameters, state)
        per_param = [{} for _ in self.params]
        for key, value in state.items():
            if key in self.hyperparameters:
                continue
            prefix, _, rest = key.partition(".")
            index, _, name = rest.partition(".")
            template = (self._state_template(self.params[int(index)].data)
                        if prefix == "state" and index.isdigit() and int(index) < len(self.params) else {})
            if name not in template:
                raise ValueError(f"unexpected key {key!r} in {type(self).__name__} state_dict")
            expected = np.asarray(template[name])
            if value.shape != expected.shape or value.dtype != expected.dtype:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape} and dtype {value.dtype}, "
                                 f"expected {expected.shape} and {expected.dtype}")
            per_param[int(index)][name] = value.copy() if isinstance(template[name], np.ndarray) else value.item()
        for index, entries in enumerate(per_param):
            missing = [name for name in self._state_template(self.params[index].data) if name not in entries]
            if entries and missing:
                raise ValueError(f"state_dict is missing keys {[f'state.{index}.{n}' for n in missing]}")
        for name, value in hyperparameters.items():
            setattr(self, name, value)
        self.state = per_param


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's rule (dampening 0)::

        g = grad + weight_decay * w
        b = g at the first step, else momentum * b + g          (if momentum)
        g = g + momentum * b if nesterov else b                  (if momentum)
        w = w - lr * g
    """

    hyperparameters = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, *, backend=None):
        super().__init__(params, lr, backend)
        _check_nonnegative(momentum=momentum, weight_decay=weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, bool(nesterov), weight_decay

    def _state_template(self, w):
        return {"momentum_buffer": np.zeros_like(w)}

    def _update(self, kernels, w, g, state):
        first = "momentum_buffer" not in state
        if self.momentum and first:
            state["momentum_buffer"] = np.empty_like(w)
        kernels.sgd_update(w, g, state.get("momentum_buffer"), self.lr, self.momentum, self.nesterov,
                           self.weight_decay, first)


class Adam(Optimizer):
    """Adam, PyTorch's rule, with L2 weight decay added to the gradient; t counts this Parameter's steps::

        g = grad + weight_decay * w
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        w = w - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, backend=None):
        super().__init__(params, lr, backend)
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        _check_nonnegative(eps=eps, weight_decay=weight_decay)
        self.betas, self.eps, self.weight_decay = (beta1, beta2), eps, weight_decay

    def _state_template(self, w):
        return {"step": 0, "exp_avg": np.zeros_like(w), "exp_avg_sq": np.zeros_like(w)}

    def _update(self, kernels, w, g, state):
        if not state:
            state.update(self._state_template(w))
        state["step"] += 1
        beta1, beta2 = self.betas
        kernels.adam_update(w, g, state["exp_avg"], state["exp_avg_sq"], state["step"], self.lr, beta1,
                            beta2, self.eps, self.weight_decay, self.decoupled_weight_decay)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's rule::

        w = w * (1 - lr * weight_decay), then the Adam update without any L2 term.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class LRScheduler:
    """Base class: sets ``optimizer.lr = lr_at(epoch)`` at each ``step()`` (call once per epoch)."""

    hyperparameters = ("base_lr", "last_epoch")

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self):
        return _scalars_to_arrays(self, self.hyperparameters)

    def load_state_dict(self, state):
        """Restore the schedule's position; the optimizer's ``lr`` comes from its own state_dict."""
        unexpected = [key for key in state if key not in self.hyperparameters]
        if unexpected:
            raise ValueError(f"unexpected keys {unexpected} in {type(self).__name__} state_dict")
        for name, value in _arrays_to_scalars(self, self.hyperparameters, state).items():
            setattr(self, name, value)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    hyperparameters = LRScheduler.hyperparameters + ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), gamma

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``."""

    hyperparameters = LRScheduler.hyperparameters + ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        if not T_max > 0:
            raise ValueError(f"T_max must be > 0, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
