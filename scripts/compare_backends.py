#!/usr/bin/env python
"""Compare fastnn's kernel backends at the shapes of MNIST training, float32, 2 threads.

Prints three tables:
1. every op's forward + backward per backend at batch 64 and 256 (the reference backend on a
   slice of a few images, scaled per image): time per call, images/s, GFLOP/s (conv, linear),
   speed-up per image over reference, the largest absolute difference from reference on the
   slice, and PASS/MISS where issue 2 sets a target;
2. a hand-written per-image loop CNN of the kind students write (conv 3x3 -> max-pool 2 ->
   linear -> softmax-CE, SGD, one image at a time) against fastnn's whole seed_cnn training step;
3. the jit backend's compile time for every float32 kernel, cold (empty Numba cache, a fresh
   process) and warm (a second process on the same cache).

Times are medians of several repeats, each after an untimed warm-up call.

    python scripts/compare_backends.py            # the full comparison (a few minutes)
    python scripts/compare_backends.py --quick    # one repeat, no compile times: a smoke run
"""
import argparse
import pathlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "asv_bench"))
import benchmarks  # noqa: E402,F401  (first: it fixes 2 threads before NumPy and Numba start)

import numpy as np  # noqa: E402

import fastnn.kernels  # noqa: E402
from benchmarks.common import (FAST_BACKENDS, KERNEL_CASES, build_model, flops,  # noqa: E402
                               forward_backward, jit_compile_seconds, make_inputs,
                               machine_note, make_optimizer, max_abs_difference, print_table)
from fastnn.losses import CrossEntropyLoss  # noqa: E402


# -- timing -------------------------------------------------------------------------------------

def median_seconds(fn, repeats, min_sample_seconds):
    """Median seconds of one call of ``fn`` over ``repeats`` samples, after one untimed call.
    Each sample times enough calls back to back to last ``min_sample_seconds``."""
    fn()
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - start >= min_sample_seconds or number >= 1 << 16:
            break
        number *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


# -- targets of issue 2 -------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """``metric`` of ``case`` at batch ``batch`` (None: any batch) must be >= (or <=) ``bound``."""
    case: str
    batch: int | None
    metric: str          # "GFLOP/s", "images/s" or "ms"
    at_least: bool
    bound: float

    def check(self, measured):
        passed = measured >= self.bound if self.at_least else measured <= self.bound
        return f"{'>=' if self.at_least else '<='}{self.bound:g} {self.metric}", "PASS" if passed else "MISS"


KERNEL_TARGETS = (
    Target("lenet.conv2", 64, "GFLOP/s", True, 50),
    Target("lenet.conv1", 64, "GFLOP/s", True, 20),
    Target("seed_cnn.conv", None, "images/s", True, 150_000),
    Target("lenet.pool1", 64, "ms", False, 2.0),      # max-pool 2x2 on (64, 32, 28, 28)
)
STEP_SPEEDUP_TARGET = 1000
COLD_COMPILE_TARGET_S = 20.0
WARM_COMPILE_TARGET_S = 2.0


def kernel_target(case, batch):
    for target in KERNEL_TARGETS:
        if target.case == case and target.batch in (None, batch):
            return target
    return None


# -- table 1: kernels ---------------------------------------------------------------------------

def format_seconds(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def compare_kernels(cases, batch_sizes, backends, reference_images, repeats, min_sample_seconds):
    """Table 1. Returns nothing; prints one block of rows per case."""
    reference = fastnn.kernels.get("reference")
    header = ["case", "N", "backend", "time/call", "images/s", "GFLOP/s", "x ref", "max|diff|", "target", ""]
    rows = []
    for case in cases:
        slice_inputs = make_inputs(case, reference_images)
        samples = []
        for _ in range(max(1, repeats // 2)):     # the reference is slow: fewer samples, no warm-up
            start = time.perf_counter()
            expected = forward_backward(reference, case, slice_inputs)
            samples.append(time.perf_counter() - start)
        ref_seconds = statistics.median(samples)
        ref_per_image = ref_seconds / reference_images
        ref_flops = flops(case, reference_images)
        rows.append([case.name, reference_images, "reference", format_seconds(ref_seconds),
                     f"{1 / ref_per_image:,.0f}", f"{ref_flops / ref_seconds / 1e9:.3f}" if ref_flops else "",
                     "1", "0", "", ""])
        differences = {}
        for backend in backends:
            outputs = forward_backward(fastnn.kernels.get(backend), case, slice_inputs)
            differences[backend] = max_abs_difference(outputs, expected)
        for batch in batch_sizes:
            inputs = make_inputs(case, batch)
            for backend in backends:
                ops = fastnn.kernels.get(backend)
                seconds = median_seconds(lambda: forward_backward(ops, case, inputs), repeats,
                                         min_sample_seconds)
                measured = {"images/s": batch / seconds, "ms": seconds * 1e3}
                case_flops = flops(case, batch)
                if case_flops:
                    measured["GFLOP/s"] = case_flops / seconds / 1e9
                target = kernel_target(case.name, batch)
                bound, verdict = target.check(measured[target.metric]) if target else ("", "")
                rows.append([case.name, batch, backend, format_seconds(seconds),
                             f"{measured['images/s']:,.0f}",
                             f"{measured['GFLOP/s']:.1f}" if case_flops else "",
                             f"{ref_per_image * batch / seconds:,.0f}", f"{differences[backend]:.1e}",
                             bound, verdict])
    print("1. Kernels: forward + backward "
          f"(reference on {reference_images} images; 'x ref' is the speed-up per image)")
    print_table(header, rows)


# -- table 2: a student's per-image CNN against fastnn's seed_cnn step --------------------------

def student_cnn_step(image, label, params, lr=0.01):
    """One SGD step on one (28, 28) image, written the way a first CNN usually is: loops over
    every output position, one image at a time. ``params`` = [w (8, 3, 3), b (8,),
    w_fc (1352, 10), b_fc (10,)] is updated in place; returns the loss."""
    w, b, w_fc, b_fc = params
    conv = np.zeros((8, 26, 26), np.float32)
    for f in range(8):
        for i in range(26):
            for j in range(26):
                conv[f, i, j] = np.sum(image[i:i + 3, j:j + 3] * w[f]) + b[f]
    pooled = np.zeros((8, 13, 13), np.float32)
    for f in range(8):
        for i in range(13):
            for j in range(13):
                pooled[f, i, j] = np.max(conv[f, 2 * i:2 * i + 2, 2 * j:2 * j + 2])
    logits = pooled.reshape(-1) @ w_fc + b_fc
    probs = np.exp(logits - np.max(logits))
    probs /= np.sum(probs)
    loss = -np.log(probs[label])

    dlogits = probs.copy()
    dlogits[label] -= 1
    dw_fc = np.outer(pooled.reshape(-1), dlogits)
    dpooled = (w_fc @ dlogits).reshape(8, 13, 13)
    dconv = np.zeros_like(conv)
    for f in range(8):
        for i in range(13):
            for j in range(13):
                r, c = np.unravel_index(np.argmax(conv[f, 2 * i:2 * i + 2, 2 * j:2 * j + 2]), (2, 2))
                dconv[f, 2 * i + r, 2 * j + c] = dpooled[f, i, j]
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    for f in range(8):
        for i in range(26):
            for j in range(26):
                dw[f] += dconv[f, i, j] * image[i:i + 3, j:j + 3]
                db[f] += dconv[f, i, j]
    for param, grad in zip(params, (dw, db, dw_fc, dlogits)):
        param -= lr * grad
    return loss


def seed_cnn_step_seconds(backend, batch, repeats, min_sample_seconds):
    """Median seconds of one fastnn seed_cnn training step (forward, loss, backward, SGD with
    momentum) on a batch of random images, as fastnn.train.train_epoch takes it (the gradient
    of the input, which is data, is not computed)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model = build_model("seed_cnn", backend)
    criterion = CrossEntropyLoss()
    optimizer = make_optimizer(model)

    def step():
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        model.backward(loss.backward(), input_grad=False)
        optimizer.step()

    return median_seconds(step, repeats, min_sample_seconds)


def compare_with_student(batch_sizes, backends, student_images, repeats, min_sample_seconds):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((student_images + 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, student_images + 1)
    params = [(rng.standard_normal(shape) * scale).astype(np.float32)
              for shape, scale in (((8, 3, 3), 0.47), ((8,), 0.0), ((1352, 10), 0.038), ((10,), 0.0))]
    student_cnn_step(images[-1], labels[-1], params)      # warm-up
    per_image = []
    for image, label in zip(images[:-1], labels[:-1]):
        start = time.perf_counter()
        student_cnn_step(image, label, params)
        per_image.append(time.perf_counter() - start)
    student = statistics.median(per_image)

    rows = [["student loop CNN", 1, "numpy", format_seconds(student), format_seconds(student), "1", "", ""]]
    best = None
    for batch in batch_sizes:
        for backend in backends:
            seconds = seed_cnn_step_seconds(backend, batch, repeats, min_sample_seconds)
            speedup = student / (seconds / batch)
            best = max(best or 0, speedup)
            rows.append(["fastnn seed_cnn step", batch, backend, format_seconds(seconds),
                         format_seconds(seconds / batch), f"{speedup:,.0f}", "", ""])
    rows[-1][-2:] = [f">={STEP_SPEEDUP_TARGET}x (best)", "PASS" if best >= STEP_SPEEDUP_TARGET else "MISS"]
    print(f"\n2. One training step (forward, loss, backward, SGD), per image; the student CNN is the "
          f"median of {student_images} images")
    print_table(["", "N", "backend", "time/step", "time/image", "x student", "target", ""], rows)


# -- table 3: jit compile time ------------------------------------------------------------------

def compare_compile_times():
    print("\n3. jit: compiling every float32 kernel (fastnn.kernels.jit.warm_up) in a fresh process")
    with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as cache_dir:
        cold = jit_compile_seconds(cache_dir)
        warm = jit_compile_seconds(cache_dir)
    print_table(["cache", "seconds", "target", ""], [
        ["cold (empty NUMBA_CACHE_DIR)", f"{cold:.2f}", f"<={COLD_COMPILE_TARGET_S:g} s",
         "PASS" if cold <= COLD_COMPILE_TARGET_S else "MISS"],
        ["warm (second process)", f"{warm:.2f}", f"<={WARM_COMPILE_TARGET_S:g} s",
         "PASS" if warm <= WARM_COMPILE_TARGET_S else "MISS"],
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repeat, short samples, one student image, no compile times (a smoke run)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--backends", nargs="+", choices=FAST_BACKENDS, default=list(FAST_BACKENDS),
                        help="fast backends to compare with reference")
    parser.add_argument("--cases", nargs="+", choices=[c.name for c in KERNEL_CASES],
                        default=[c.name for c in KERNEL_CASES], help="which ops at which shapes")
    parser.add_argument("--repeats", type=int, default=7, help="timed samples per measurement (median)")
    parser.add_argument("--reference-images", type=int, default=2,
                        help="slice the reference backend runs on (at least 2: batch-norm needs them)")
    parser.add_argument("--student-images", type=int, default=5)
    args = parser.parse_args(argv)
    if args.reference_images < 2:
        parser.error(f"--reference-images must be at least 2, got {args.reference_images}")
    repeats, min_sample, student_images = args.repeats, 0.05, args.student_images
    if args.quick:
        repeats, min_sample, student_images = 1, 0.0, 1

    print(machine_note())
    cases = [c for c in KERNEL_CASES if c.name in args.cases]
    compare_kernels(cases, args.batch_sizes, args.backends, args.reference_images, repeats, min_sample)
    compare_with_student(args.batch_sizes, args.backends, student_images, repeats, min_sample)
    if args.quick:
        print("\n3. jit compile times: skipped (--quick)")
    else:
        compare_compile_times()


if __name__ == "__main__":
    main()
