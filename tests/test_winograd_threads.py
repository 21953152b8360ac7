"""The threads of the jit backend's Winograd convolution (kernels/jit/winograd.py): the caller and
worker threads each run one part of the batch, with OpenBLAS held to one thread for the call. The
setting is given back, errors reach the caller, calls from several threads take turns, and a
forked child and a call at interpreter exit convolve too."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fastnn import kernels
from fastnn.kernels.jit import winograd


def blas_threads():
    return [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def two_blas_threads():
    """OpenBLAS on two threads for each test, whatever earlier tests left, so that "given back"
    means back to 2, not to a 1 some other call left behind."""
    with threadpool_limits(2, user_api="blas"):
        yield


def layer(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((6, 16, 8, 8)), "w": rng.standard_normal((4, 16, 3, 3)),
            "b": rng.standard_normal(4), "pad": 1}


def test_blas_threads_are_held_to_one_during_the_call_and_given_back(monkeypatch):
    before = blas_threads()
    if not before:
        pytest.skip("NumPy's BLAS is not one threadpoolctl knows")
    assert all(n == 2 for _, n in before)
    monkeypatch.setattr(winograd, "batch_chunks", lambda N: min(N, 2))
    seen = []
    transform = winograd._transform_patches

    def spy(*args):
        seen.append(blas_threads())
        return transform(*args)

    monkeypatch.setattr(winograd, "_transform_patches", spy)
    y, cache = kernels.get("jit").conv2d_forward(**layer())
    assert cache[0] is winograd
    assert len(seen) >= 2 and all(n == 1 for threads in seen for _, n in threads), seen
    assert blas_threads() == before


@pytest.mark.parametrize("failing_on", ["caller", "worker"])
def test_an_error_in_any_part_reaches_the_caller_after_every_part_ended(monkeypatch, failing_on):
    """An error in the caller's own part or in a worker's: raised by the call once every other
    part has ended (they write into the call's arrays), the BLAS setting given back, and the next
    call works (the workers were not lost)."""
    before = blas_threads()
    monkeypatch.setattr(winograd, "batch_chunks", lambda N: min(N, 3))
    transform = winograd._transform_patches
    ops = kernels.get("jit")
    expected, _ = ops.conv2d_forward(**layer())
    started, ended = [], []

    def failing(*args):
        on_worker = threading.current_thread().name.startswith("fastnn-winograd")
        if on_worker == (failing_on == "worker"):
            raise RuntimeError("planted")
        started.append(1)
        time.sleep(0.1)
        ended.append(1)
        return transform(*args)

    monkeypatch.setattr(winograd, "_transform_patches", failing)
    with pytest.raises(RuntimeError, match="planted"):
        ops.conv2d_forward(**layer())
    assert started and len(ended) == len(started)
    assert blas_threads() == before
    monkeypatch.setattr(winograd, "_transform_patches", transform)
    y, _ = ops.conv2d_forward(**layer())
    np.testing.assert_array_equal(y, expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_convolves_with_threads_of_its_own(monkeypatch):
    """The parent's worker threads do not exist in a forked child: it makes its own (waiting on
    the parent's would hang it)."""
    monkeypatch.setattr(winograd, "batch_chunks", lambda N: min(N, 2))
    ops = kernels.get("jit")
    expected, _ = ops.conv2d_forward(**layer())  # the parent's workers exist now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the convolution's output through the pipe, then leave
        try:
            y, _ = ops.conv2d_forward(**layer())
            os.write(write, y.tobytes())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the convolution")
        time.sleep(0.05)
    with os.fdopen(read, "rb") as pipe:
        got = np.frombuffer(pipe.read(), expected.dtype)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_calls_from_several_threads_at_once_give_each_its_own_result_and_the_setting_back(monkeypatch):
    """Three program threads convolving at once (their calls take turns, jit/winograd.py): each
    gets what it would alone, and OpenBLAS's setting is what it was before."""
    before = blas_threads()
    monkeypatch.setattr(winograd, "batch_chunks", lambda N: min(N, 2))
    ops = kernels.get("jit")
    layers = [layer(seed) for seed in range(3)]
    alone = [ops.conv2d_forward(**inputs)[0] for inputs in layers]
    start = threading.Barrier(len(layers))
    results = [[] for _ in layers]

    def convolve(i):
        start.wait()
        for _ in range(20):
            results[i].append(ops.conv2d_forward(**layers[i])[0])

    threads = [threading.Thread(target=convolve, args=(i,)) for i in range(len(layers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, alone):
        assert len(got) == 20
        for y in got:
            np.testing.assert_array_equal(y, want)
    assert blas_threads() == before


def test_a_convolution_at_interpreter_exit_runs_on_the_calling_thread():
    """In an ``atexit`` handler executors take no new work: the call does every part itself."""
    program = textwrap.dedent("""
        import atexit
        import numpy as np
        from fastnn import kernels
        from fastnn.kernels.jit import winograd
        winograd.batch_chunks = lambda N: min(N, 2)
        x, w, b = np.ones((4, 16, 6, 6)), np.ones((2, 16, 3, 3)), np.zeros(2)
        alone = kernels.get("jit").conv2d_forward(x, w, b, pad=1)[0]

        def at_exit():
            y = kernels.get("jit").conv2d_forward(x, w, b, pad=1)[0]
            print("equal" if np.array_equal(y, alone) else "different")

        atexit.register(at_exit)
        """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "equal", done.stderr[-2000:]
