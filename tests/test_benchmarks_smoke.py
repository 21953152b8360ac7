"""Smoke test of the benchmark code (asv_bench/, scripts/compare_backends.py and
scripts/compare_torch.py), so it cannot rot.

Every asv benchmark runs its setup and body once for each parameter combination with batch 64
(the other batch size runs the same code), on a few hundred MNIST images instead of the full
sets; compare_backends.py runs with --quick, compare_torch.py on a slice; if PyTorch is
installed, the PyTorch copies that compare_torch.py trains must compute what the fastnn models
compute. Nothing here checks a speed: the scripts do that. Each run happens in a child process,
because the benchmark package pins the thread counts of BLAS and Numba (which Numba refuses to
change once its threads run).

Run as a script, this file is that child: ``python test_benchmarks_smoke.py MODULE CLASS`` or
``python test_benchmarks_smoke.py --torch-parity``.
"""
import importlib.util
import inspect
import itertools
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BATCH = 64
TRAIN_IMAGES = 2 * BATCH     # the warm-up trains on two batches
TEST_IMAGES = 200
BENCHMARK_PREFIXES = ("time_", "track_", "peakmem_")

SUITES = [
    ("bench_kernels", "Kernels"),
    ("bench_kernels", "ReferenceKernels"),
    ("bench_training", "TrainEpoch"),
    ("bench_training", "Inference"),
    ("bench_training", "ReferenceTraining"),
    pytest.param("bench_jit", "JitCompile", marks=pytest.mark.slow),   # a cold compile: ~20 s
]


def run_suite(module_name, class_name):
    """Import ``benchmarks.<module_name>`` with MNIST cut down, then run setup, every benchmark
    method and teardown once for each parameter combination with batch ``BATCH``. Returns a list of
    ``[method, params, skipped, value]`` (skipped: setup raised NotImplementedError)."""
    sys.path.insert(0, str(REPO / "asv_bench"))
    import importlib

    from benchmarks import common

    mnist = common.load_mnist()
    mnist = mnist._replace(
        train_images=mnist.train_images[:TRAIN_IMAGES], train_labels=mnist.train_labels[:TRAIN_IMAGES],
        test_images=mnist.test_images[:TEST_IMAGES], test_labels=mnist.test_labels[:TEST_IMAGES])
    common.load_mnist = lambda: mnist
    module = importlib.import_module(f"benchmarks.{module_name}")
    if module_name == "bench_training":
        module.REFERENCE_IMAGES = module.REFERENCE_BATCH = 2     # the reference backend is slow
    suite = getattr(module, class_name)
    methods = [name for name, _ in inspect.getmembers(suite, inspect.isfunction)
               if name.startswith(BENCHMARK_PREFIXES)]
    combinations = list(itertools.product(*suite.params)) if hasattr(suite, "params") else [()]
    if "batch" in getattr(suite, "param_names", ()):
        batch_axis = suite.param_names.index("batch")
        combinations = [params for params in combinations if params[batch_axis] == BATCH]
    results = []
    for params in combinations:
        instance = suite()
        try:
            instance.setup(*params)
        except NotImplementedError:
            results += [[name, list(params), True, None] for name in methods]
            continue
        for name in methods:
            results.append([name, list(params), False, getattr(instance, name)(*params)])
        if hasattr(instance, "teardown"):
            instance.teardown(*params)
    return results


@pytest.mark.parametrize("module_name, class_name", SUITES)
def test_asv_suite_runs_once_per_combination(module_name, class_name, mnist_dir):
    finished = subprocess.run([sys.executable, __file__, module_name, class_name], capture_output=True,
                              text=True, env=dict(os.environ, FASTNN_DATA_DIR=str(mnist_dir)))
    assert finished.returncode == 0, finished.stderr
    results = json.loads(finished.stdout.strip().splitlines()[-1])
    assert results, f"{class_name} has no benchmark"
    for name, params, skipped, value in results:
        if skipped:
            # Only the reference backend may skip (it is too slow for full epochs).
            assert "reference" in params, (name, params)
        elif name.startswith("track_"):
            assert math.isfinite(value) and value > 0, (name, params, value)
    assert not all(skipped for _, _, skipped, _ in results), f"every combination of {class_name} was skipped"


def test_compare_backends_quick_prints_every_case_and_target():
    finished = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_backends.py"), "--quick",
                               "--batch-sizes", "64"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    first_cells = {line.split()[0] for line in out.splitlines() if line.strip()}
    for case in ("seed_cnn.conv", "lenet.conv1", "lenet.conv2", "lenet.pool1", "mlp.batchnorm",
                 "mlp.dropout", "softmax_ce", "lenet.block2"):
        assert case in first_cells, f"{case} missing from:\n{out}"
    # Four kernel targets at batch 64 on each of the two fast backends, and the 1000x step target.
    assert out.count("PASS") + out.count("MISS") == 2 * 4 + 1, out
    assert "student loop CNN" in out and "fastnn seed_cnn step" in out


def test_compare_torch_on_a_slice_shows_training_inference_and_memory(mnist_dir):
    command = [sys.executable, str(REPO / "scripts" / "compare_torch.py"), "--no-torch",
               "--models", "seed_cnn", "--batch-sizes", "64", "--epochs", "1", "--limit", "256"]
    finished = subprocess.run(command, capture_output=True, text=True,
                              env=dict(os.environ, FASTNN_DATA_DIR=str(mnist_dir)))
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    assert "Training: one epoch of 256 images" in out, out
    assert "Inference: 256 test images" in out, out
    assert "Peak memory" in out, out
    rows = [line.split() for line in out.splitlines() if line.startswith("seed_cnn")]
    assert len(rows) == 3, out        # one row in each table


def torch_parity():
    """Largest |fastnn - PyTorch copy| of each model's output on a random batch, in eval mode
    and (for the models without dropout) in train mode, where batch-norm uses batch statistics."""
    sys.path.insert(0, str(REPO / "scripts"))
    import numpy as np
    import torch

    import compare_torch
    from benchmarks.common import MODEL_NAMES, build_model

    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32)
    differences = {}
    for name in MODEL_NAMES:
        model = build_model(name, "vectorized")
        copy = compare_torch.to_torch(model)
        for mode in ("eval", "train"):
            if mode == "train" and name == "mlp_bn_dropout":
                continue                  # the dropout masks come from different generators
            getattr(model, mode)()
            getattr(copy, mode)()
            with torch.no_grad():
                expected = copy(torch.from_numpy(x)).numpy()
            differences[f"{name} {mode}"] = float(np.max(np.abs(model(x) - expected)))
    return differences


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_torch_copies_compute_what_the_fastnn_models_compute():
    finished = subprocess.run([sys.executable, __file__, "--torch-parity"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    differences = json.loads(finished.stdout.strip().splitlines()[-1])
    assert len(differences) == 7
    # Logits of order 1-10 summed in float32 in different orders: a few 1e-6 apart; a wrong
    # layout or a missing layer would be off by order 1.
    for what, difference in differences.items():
        assert difference < 1e-4, (what, difference)


if __name__ == "__main__":
    if sys.argv[1] == "--torch-parity":
        print(json.dumps(torch_parity()))
    else:
        print(json.dumps(run_suite(sys.argv[1], sys.argv[2])))


BUSY_PROBE = """
import sys, threading, time
sys.path.insert(0, {asv_bench!r})
from benchmarks.common import busy_fraction, machine_note
stop = time.perf_counter() + 1.5

def spin():
    while time.perf_counter() < stop:
        pass

spinner = threading.Thread(target=spin)
spinner.start()
print(busy_fraction(0.5)); print(machine_note())
spinner.join()
"""


def test_the_scripts_warn_when_a_core_is_busy_before_they_measure():
    """A thread spinning on one core while the scripts look: at least that core is seen busy,
    and the header line says the timings are unreliable."""
    probe = BUSY_PROBE.format(asv_bench=str(REPO / "asv_bench"))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         timeout=120).stdout.splitlines()
    assert float(out[0]) >= 0.8 / os.cpu_count()
    assert "the machine is busy" in out[1]
