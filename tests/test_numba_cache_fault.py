"""With no writable Numba cache directory, fastnn still trains on the jit backend: caching off, a warning.

As root, file permissions cannot make a directory unwritable, so the test leaves Numba one place
to look (``NUMBA_CACHE_LOCATOR_CLASSES``: only ``NUMBA_CACHE_DIR``) and points that below a
regular file, where no directory can be made.
"""
import os
import subprocess
import sys


def test_training_without_a_writable_numba_cache_warns_and_trains(tmp_path, mnist_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(blocker / "numba"),
               NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator", FASTNN_DATA_DIR=str(mnist_dir))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "train", "--model", "mlp", "--hidden", "32", "--backend", "jit",
         "--epochs", "1", "--limit", "512", "--test-limit", "256", "--no-progress", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no writable Numba cache directory" in result.stderr
    assert (out / "last.npz").is_file()
