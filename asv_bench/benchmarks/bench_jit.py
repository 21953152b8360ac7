"""How long the jit backend takes to compile every kernel for float32, in a fresh process."""
import shutil
import tempfile

from .common import jit_compile_seconds


class JitCompile:
    """Cold: an empty Numba cache directory. Warm: the second process on the same directory."""
    rounds = 1
    timeout = 300

    def setup(self):
        self.cache_dir = tempfile.mkdtemp(prefix="fastnn-asv-numba-")

    def teardown(self):
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def track_cold_seconds(self):
        return jit_compile_seconds(self.cache_dir)

    track_cold_seconds.unit = "seconds"

    def track_warm_seconds(self):
        jit_compile_seconds(self.cache_dir)
        return jit_compile_seconds(self.cache_dir)

    track_warm_seconds.unit = "seconds"
