"""Per-kernel forward + backward time at the shapes the models have while training on MNIST.

The fast backends run whole batches (64 and 256 images); the reference backend, written to be
read and not to be fast, runs a slice of ``REFERENCE_IMAGES`` images.
"""
import fastnn.kernels

from .common import CASES_BY_NAME, FAST_BACKENDS, forward_backward, make_inputs

CASE_NAMES = list(CASES_BY_NAME)
REFERENCE_IMAGES = 2


class Kernels:
    """One forward and one backward call of an op, float32, at batch 64 and 256."""
    params = [CASE_NAMES, [64, 256], list(FAST_BACKENDS)]
    param_names = ["case", "batch", "backend"]
    timeout = 180

    def setup(self, case, batch, backend):
        self.case = CASES_BY_NAME[case]
        self.ops = fastnn.kernels.get(backend)
        self.inputs = make_inputs(self.case, batch)
        forward_backward(self.ops, self.case, self.inputs)   # compile or load jit kernels

    def time_forward_backward(self, case, batch, backend):
        forward_backward(self.ops, self.case, self.inputs)
    # From this version on, first layers skip dx as in training (before: every case computed dx).
    time_forward_backward.version = "first-layers-without-dx"


class ReferenceKernels:
    """The reference backend's forward + backward on a slice of ``REFERENCE_IMAGES`` images."""
    params = [CASE_NAMES]
    param_names = ["case"]
    number = 1
    repeat = (1, 3, 30.0)
    warmup_time = 0
    timeout = 300

    def setup(self, case):
        self.case = CASES_BY_NAME[case]
        self.ops = fastnn.kernels.get("reference")
        self.inputs = make_inputs(self.case, REFERENCE_IMAGES)

    def time_forward_backward(self, case):
        forward_backward(self.ops, self.case, self.inputs)
    time_forward_backward.version = "first-layers-without-dx"
