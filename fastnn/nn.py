"""Layers, shaped like ``torch.nn``, with every backward pass written out (no autograd).

A ``Module`` computes ``y = module(x)`` and, after a forward pass, ``dx = module.backward(dy)``,
setting ``.grad`` on its ``Parameter``s on the way. ``module.backward(dy, input_grad=False)``
says the caller has no use for d(input) (the input is data, as in a training step): the
Parameters get the same gradients, d(input) is skipped where that saves work, and None is
returned. Each layer asks
``fastnn.backend.ops(self.backend)`` for its kernels when it is called (so ``use_backend`` and
``FASTNN_BACKEND`` take effect) and keeps the kernel's cache, together with the backend that made
it, for ``backward``.

Arrays are NCHW; linear weights are ``(in_features, out_features)`` so that ``y = x @ w + b``.
"""
import numpy as np

from .backend import ops, resolve
from .kernels._common import FLOAT_DTYPES, check_ndim


def make_rng(rng):
    """A ``numpy.random.Generator`` from a Generator (returned as is), an int seed, or None (seed 0)."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _check_backend(backend):
    """Validate a layer's own backend choice now rather than at its first call."""
    if backend is not None:
        resolve(backend)
    return backend


def _he_normal(rng, shape, fan_in, dtype):
    """Kaiming/He normal initialisation: N(0, 2/fan_in), drawn in float64 then cast."""
    return (make_rng(rng).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class Parameter:
    """A trainable array: ``.data`` holds the values, ``.grad`` the gradient (None until backward)."""

    def __init__(self, data):
        data = np.asarray(data)
        if data.dtype not in FLOAT_DTYPES:
            raise ValueError(f"Parameter data must be float32 or float64, got dtype {data.dtype}")
        self.data = data
        self.grad = None

    def add_grad(self, grad):
        """Accumulate ``grad`` (same shape as ``.data``) into ``.grad``, as repeated backward calls do."""
        self.grad = grad if self.grad is None else self.grad + grad

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and model.

    Assigning a ``Parameter`` or a ``Module`` to an attribute registers it (in assignment order);
    ``register_buffer`` registers an array that is saved in ``state_dict`` but not trained.
    Subclasses call ``super().__init__()`` first and define ``forward(x)`` and
    ``backward(dy, input_grad=True)`` (see the module docstring).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        self.training = True

    # -- registration -------------------------------------------------------------------------

    def __setattr__(self, name, value):
        if name in self.__dict__ and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)  # a plain attribute set again (the usual case)
            return
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call Module.__init__() "
                                 f"before assigning attribute {name!r}")
        if isinstance(value, Parameter):
            registry = self._parameters
        elif isinstance(value, Module):
            registry = self._modules
        elif name in self._buffers:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"buffer {name!r} must be assigned an ndarray, got {type(value).__name__}")
            registry = self._buffers
        elif name in self._parameters or name in self._modules:
            raise TypeError(f"cannot replace registered {name!r} with a {type(value).__name__}")
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)
        for other in (self._parameters, self._buffers, self._modules):
            if other is not registry:
                other.pop(name, None)
        registry[name] = value

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Register ``array`` (an ndarray) as buffer ``name``: saved in ``state_dict``, not trained."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"buffer name must be a non-empty string without '.', got {name!r}")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"buffer {name!r} must be an ndarray, got {type(array).__name__}")
        if name in self._parameters or name in self._modules or name in self.__dict__:
            raise ValueError(f"attribute {name!r} already exists on {type(self).__name__}")
        self._buffers[name] = array

    # -- traversal ----------------------------------------------------------------------------

    def children(self):
        """The direct submodules, in registration order."""
        return list(self._modules.values())

    def named_modules(self):
        """``(dotted name, module)`` for this module ("") and every submodule, depth first, each once."""
        result, seen = [], set()

        def visit(prefix, module):
            if id(module) in seen:
                return
            seen.add(id(module))
            result.append((prefix, module))
            for name, child in module._modules.items():
                visit(f"{prefix}.{name}" if prefix else name, child)

        visit("", self)
        return result

    def _named_members(self, registry):
        result, seen = [], set()
        for prefix, module in self.named_modules():
            for name, value in getattr(module, registry).items():
                if id(value) not in seen:
                    seen.add(id(value))
                    result.append((f"{prefix}.{name}" if prefix else name, value))
        return result

    def named_parameters(self):
        """``(dotted name, Parameter)`` pairs, e.g. ``("0.weight", ...)``; each Parameter once."""
        return self._named_members("_parameters")

    def parameters(self):
        """Every Parameter, in the order of ``named_parameters``."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        """``(dotted name, ndarray)`` pairs, e.g. ``("1.running_mean", ...)``."""
        return self._named_members("_buffers")

    # -- modes and gradients ------------------------------------------------------------------

    def train(self, mode=True):
        """Set training mode (``mode=False``: evaluation mode) on this module and all submodules."""
        for _, module in self.named_modules():
            module.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode: batch norm uses its running statistics, dropout is the identity."""
        return self.train(False)

    def zero_grad(self):
        """Forget every Parameter's gradient (``.grad = None``)."""
        for p in self.parameters():
            p.grad = None

    # -- saving and loading -------------------------------------------------------------------

    def state_dict(self):
        """Copies of every parameter and buffer array, keyed by dotted name."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update((name, b.copy()) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (as made by ``state_dict``) into the parameters and buffers.

        Strict: a missing or unexpected key, or a shape or dtype that differs, raises ValueError
        naming the key, and then nothing has been changed.
        """
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.named_buffers())
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match {type(self).__name__}: "
                             f"missing keys {missing}, unexpected keys {unexpected}")
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, expected {target.shape}")
            if value.dtype != target.dtype:
                raise ValueError(f"state_dict[{name!r}] has dtype {value.dtype}, expected {target.dtype}")
        for name, target in targets.items():
            np.copyto(target, state[name])

    # -- computation --------------------------------------------------------------------------

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dy, input_grad=True):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, x):
        return self.forward(x)

    def _saved(self):
        """The (kernels, cache) pair kept by the last forward pass."""
        saved = self.__dict__.get("_forward_state")
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if saved[1] is _FUSED:
            raise RuntimeError(f"{type(self).__name__} ran fused with its neighbours in a Sequential's "
                               "forward; call that Sequential's backward")
        return saved

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({name}): {child!r}".replace("\n", "\n  ") for name, child in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; registered as "0", "1", ... so parameters are named "0.weight"."""

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential argument {index} is a {type(module).__name__}, not a Module")
            setattr(self, str(index), module)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, index):
        """The module at ``index``; a slice gives a Sequential of those (same) modules."""
        if isinstance(index, slice):
            return Sequential(*self.children()[index])
        return self.children()[index]

    def __iter__(self):
        return iter(self.children())

    def forward(self, x):
        """Each module in turn; a run ``Conv2d, [ReLU], MaxPool2d`` goes through the fused kernel
        ``conv2d_maxpool2d`` in one call (see ``_ConvPool``), a pair ``Linear, ReLU`` through
        ``linear_relu`` (see ``_LinearReLU``)."""
        self._steps = self._fused_steps()
        for step in self._steps:
            x = step(x)
        return x

    def _fused_steps(self):
        """``_fuse(self.children())``, built again only when the children, their own backend
        choices or (if any child names one) the backend in force have changed since the last
        forward. (Children that name no backend are fused whatever the backend in force.)"""
        children = self.children()
        backends = [module.__dict__.get("backend") for module in children]
        # The children by identity (a module may define ==); the cached steps keep them alive,
        # so their ids are not reused while they are in the key.
        key = (tuple(map(id, children)), backends, resolve() if any(backends) else None)
        fusion = self.__dict__.get("_fusion")
        if fusion is None or fusion[0] != key:
            fusion = self._fusion = (key, _fuse(children))
        return fusion[1]

    def backward(self, dy, input_grad=True):
        """dy (the output's shape) -> d(input); every layer's Parameters get their gradients.

        ``input_grad=False``: the pass stops at the first step that has Parameters, which is
        told to skip its own input gradient, and None is returned.
        """
        steps = self.__dict__.get("_steps")
        if steps is None:
            raise RuntimeError("Sequential.backward called before forward")
        first = 0 if input_grad else next((i for i, step in enumerate(steps) if _has_parameters(step)), len(steps))
        for i in range(len(steps) - 1, first - 1, -1):
            dy = steps[i].backward(dy, input_grad=input_grad or i > first)
        return dy if input_grad else None


def _has_parameters(step):
    """Whether a step of a Sequential has Parameters (its own or its submodules')."""
    return (isinstance(step, (_ConvPool, _LinearReLU)) or bool(step._parameters)
            or (bool(step._modules) and bool(step.parameters())))


# The cache a layer keeps when a Sequential ran it inside a fused step: its gradient comes
# through that step, from the Sequential's backward.
_FUSED = "fused"


class _ConvPool:
    """A ``Conv2d``, optionally a ``ReLU``, then a ``MaxPool2d`` of a Sequential, computed by the
    fused kernel ``conv2d_maxpool2d`` (same results as the three layers one after the other,
    without the full-size convolution output, its ReLU and its pooling pass). The convolution's
    gradients go to its Parameters as ``Conv2d.backward`` would send them. In eval mode the
    kernel keeps nothing for backward (inference then allocates only the output)."""

    def __init__(self, conv, relu, pool):
        self.conv, self.relu, self.pool = conv, relu, pool

    def __call__(self, x):
        conv, pool = self.conv, self.pool
        self.kernels = ops(conv.backend)
        self.training = conv.training
        y, self.cache = self.kernels.conv2d_maxpool2d_forward(
            x, conv.weight.data, conv.bias.data, conv.stride, conv.padding, pool.kernel_size, pool.stride,
            relu=self.relu is not None, need_backward=self.training)
        for layer in (conv, self.relu, pool):
            if layer is not None:
                layer._forward_state = (self.kernels, _FUSED)
        return y

    def backward(self, dy, input_grad=True):
        if not self.training:
            raise RuntimeError("backward after an eval-mode forward: a fused Conv2d-MaxPool2d step keeps "
                               "nothing for backward in eval mode; call train() before that forward")
        dx, dw, db = self.kernels.conv2d_maxpool2d_backward(dy, self.cache, input_grad)
        self.conv.weight.add_grad(dw)
        self.conv.bias.add_grad(db)
        return dx


class _LinearReLU:
    """A ``Linear`` then a ``ReLU`` of a Sequential, computed by the fused kernel ``linear_relu``
    (the same results as the two layers one after the other, with fewer passes over the
    activation). The Linear's gradients go to its Parameters as ``Linear.backward`` would send them.
    Unlike ``_ConvPool``, it keeps its cache in eval mode too: it holds only references to x and
    the weights and a boolean mask."""

    def __init__(self, linear, relu):
        self.linear, self.relu = linear, relu

    def __call__(self, x):
        self.kernels = ops(self.linear.backend)
        y, self.cache = self.kernels.linear_relu_forward(x, self.linear.weight.data, self.linear.bias_or_zeros())
        for layer in (self.linear, self.relu):
            layer._forward_state = (self.kernels, _FUSED)
        return y

    def backward(self, dy, input_grad=True):
        dx, dw, db = self.kernels.linear_relu_backward(dy, self.cache, input_grad)
        self.linear.add_grads(dw, db)
        return dx


class Linear(Module):
    """``y = x @ weight + bias`` for x (N, in_features); weight (in_features, out_features).

    Weight initialised He normal (std sqrt(2/in_features)) from ``rng``; bias zeros.
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32, backend=None):
        super().__init__()
        dtype = _check_dtype(dtype)
        self.in_features, self.out_features = in_features, out_features
        self.backend = _check_backend(backend)
        self.weight = Parameter(_he_normal(rng, (in_features, out_features), in_features, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None

    def forward(self, x):
        """x (N, in_features) -> y (N, out_features)."""
        kernels = ops(self.backend)
        y, cache = kernels.linear_forward(x, self.weight.data, self.bias_or_zeros())
        self._forward_state = (kernels, cache)
        return y

    def backward(self, dy, input_grad=True):
        """dy (N, out_features) -> dx (N, in_features); accumulates weight.grad and bias.grad."""
        kernels, cache = self._saved()
        dx, dw, db = kernels.linear_backward(dy, cache, input_grad)
        self.add_grads(dw, db)
        return dx

    def bias_or_zeros(self):
        """The bias (out_features,), or zeros of the weight's dtype for a layer without one."""
        return self.bias.data if self.bias is not None else np.zeros(self.out_features, self.weight.data.dtype)

    def add_grads(self, dw, db):
        """Accumulate dw (in_features, out_features) into weight.grad and db into bias.grad."""
        self.weight.add_grad(dw)
        if self.bias is not None:
            self.bias.add_grad(db)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with weight (F, C, KH, KW) plus bias (F,).

    ``kernel_size`` is an int or a pair (KH, KW). Weight initialised He normal
    (std sqrt(2/(C*KH*KW))) from ``rng``; bias zeros.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 rng=None, dtype=np.float32, backend=None):
        super().__init__()
        dtype = _check_dtype(dtype)
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.backend = _check_backend(backend)
        fan_in = in_channels * kh * kw
        self.weight = Parameter(_he_normal(rng, (out_channels, in_channels, kh, kw), fan_in, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype))

    def forward(self, x):
        """x (N, C, H, W) -> y (N, F, OH, OW), OH = (H + 2*padding - KH) // stride + 1."""
        kernels = ops(self.backend)
        y, cache = kernels.conv2d_forward(x, self.weight.data, self.bias.data, self.stride, self.padding)
        self._forward_state = (kernels, cache)
        return y

    def backward(self, dy, input_grad=True):
        """dy (N, F, OH, OW) -> dx (N, C, H, W); accumulates weight.grad and bias.grad."""
        kernels, cache = self._saved()
        dx, dw, db = kernels.conv2d_backward(dy, cache, input_grad)
        self.weight.add_grad(dw)
        self.bias.add_grad(db)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class MaxPool2d(Module):
    """Max over kernel_size x kernel_size windows of x (N, C, H, W); stride None means kernel_size."""

    def __init__(self, kernel_size=2, stride=None, backend=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.backend = _check_backend(backend)

    def forward(self, x):
        """x (N, C, H, W) -> y (N, C, OH, OW)."""
        kernels = ops(self.backend)
        y, cache = kernels.maxpool2d_forward(x, self.kernel_size, self.stride)
        self._forward_state = (kernels, cache)
        return y

    def backward(self, dy, input_grad=True):
        """dy (N, C, OH, OW) -> dx (N, C, H, W), each window's gradient sent to its first maximum."""
        kernels, cache = self._saved()
        return kernels.maxpool2d_backward(dy, cache) if input_grad else None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ReLU(Module):
    """``y = max(x, 0)`` elementwise, any shape."""

    def __init__(self, backend=None):
        super().__init__()
        self.backend = _check_backend(backend)

    def forward(self, x):
        kernels = ops(self.backend)
        y, cache = kernels.relu_forward(x)
        self._forward_state = (kernels, cache)
        return y

    def backward(self, dy, input_grad=True):
        kernels, cache = self._saved()
        return kernels.relu_backward(dy, cache) if input_grad else None


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x):
        self._forward_state = (None, x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, input_grad=True):
        _, shape = self._saved()
        return dy.reshape(shape) if input_grad else None


class _BatchNorm(Module):
    """Batch normalisation over every axis but the channel axis 1 (PyTorch's conventions).

    Training: normalise with the batch mean and biased variance, and replace the running_mean /
    running_var buffers with the new statistics the kernel returns. Evaluation: normalise with
    the running statistics.
    """

    input_ndim = None  # set by subclasses

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32, backend=None):
        super().__init__()
        dtype = _check_dtype(dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.backend = _check_backend(backend)
        self.weight = Parameter(np.ones(num_features, dtype))
        self.bias = Parameter(np.zeros(num_features, dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))

    def forward(self, x):
        check_ndim("x", x, (self.input_ndim,))
        kernels = ops(self.backend)
        y, cache, self.running_mean, self.running_var = kernels.batchnorm_forward(
            x, self.weight.data, self.bias.data, self.running_mean, self.running_var,
            self.momentum, self.eps, self.training)
        self._forward_state = (kernels, cache)
        return y

    def backward(self, dy, input_grad=True):
        kernels, cache = self._saved()
        dx, dgamma, dbeta = kernels.batchnorm_backward(dy, cache)
        self.weight.add_grad(dgamma)
        self.bias.add_grad(dbeta)
        return dx if input_grad else None

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of x (N, C) per feature C."""

    input_ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm of x (N, C, H, W) per channel C."""

    input_ndim = 4


class Dropout(Module):
    """Training: zero each element with probability p and scale the rest by 1/(1-p). Eval: identity.

    The keep-mask is the kernels' ``dropout_mask(x.shape, p, seed)`` (a SplitMix64 stream, the
    same bits in every backend) for a seed drawn from the layer's own Generator ``.rng``
    (``rng.integers(2**64, dtype=np.uint64)``), one seed per forward pass.
    ``backend=`` (an addition to the agreed API) chooses the kernel backend as for other layers.
    """

    def __init__(self, p=0.5, *, rng=None, backend=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}")
        self.p = p
        self.rng = make_rng(rng)
        self.backend = _check_backend(backend)

    def forward(self, x):
        if not self.training or self.p == 0:
            self._forward_state = (None, None)
            return x
        kernels = ops(self.backend)
        mask = kernels.dropout_mask(x.shape, self.p, int(self.rng.integers(2**64, dtype=np.uint64)))
        y, cache = kernels.dropout_forward(x, mask, self.p)
        self._forward_state = (kernels, cache)
        return y

    def backward(self, dy, input_grad=True):
        kernels, cache = self._saved()
        if not input_grad:
            return None
        return dy if kernels is None else kernels.dropout_backward(dy, cache)

    def extra_repr(self):
        return f"p={self.p}"


# Runs of a Sequential that go through one fused step: the layer classes, exactly, in order.
_FUSED_RUNS = {(Conv2d, MaxPool2d): lambda conv, pool: _ConvPool(conv, None, pool),
               (Conv2d, ReLU, MaxPool2d): _ConvPool,
               (Linear, ReLU): _LinearReLU}
_RUN_LENGTHS = sorted({len(kinds) for kinds in _FUSED_RUNS}, reverse=True)  # longest first


def _fuse(modules):
    """``modules`` with every run of ``_FUSED_RUNS`` (all of its layers resolving to one backend)
    replaced by its fused step; the longest run starting at a module wins."""
    steps, i = [], 0
    while i < len(modules):
        for length in _RUN_LENGTHS:
            run = modules[i:i + length]
            kinds = tuple(type(m) for m in run)
            if kinds in _FUSED_RUNS and len({resolve(m.backend) for m in run}) == 1:
                steps.append(_FUSED_RUNS[kinds](*run))
                i += len(run)
                break
        else:
            steps.append(modules[i])
            i += 1
    return steps
