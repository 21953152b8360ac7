"""Faults a long training run meets, each with the protection that handles it:

- the loss turns NaN/inf            -> TrainingDiverged naming epoch and step; last checkpoint kept
- a step overflows the weights      -> TrainingDiverged when a checkpoint is due; none written
- the process is killed (SIGKILL)   -> the last checkpoint on disk is always whole (atomic writes)
- the output folder already exists  -> refused, nothing in it touched
- last.npz truncated or foreign     -> resume refused with an error naming the file
- Ctrl-C (SIGINT)                   -> a checkpoint for the point reached; a message saying how to resume
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from fastnn import checkpoint as ckpt
from fastnn.cli import main
from fastnn.data import load_mnist
from fastnn.losses import CrossEntropyLoss
from fastnn.train import (Config, Trainer, TrainingDiverged, TrainingInterrupted, build_loaders, build_model,
                          build_optimizer)

SMALL_RUN = ["--model", "mlp", "--hidden", "64", "--backend", "vectorized", "--limit", "2000", "--test-limit", "200",
             "--no-progress"]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir, download=False)


class Wrapped:
    """A training loader that calls ``at_batch(epoch, step, x)`` on each batch it yields (epochs and
    steps counted from 1) and yields what that returns."""

    def __init__(self, loader, at_batch):
        self.loader, self.at_batch, self.epoch = loader, at_batch, 0

    rng = property(lambda self: self.loader.rng)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        for step, (x, y) in enumerate(self.loader, start=1):
            yield self.at_batch(self.epoch, step, x), y


def small_trainer(mnist, out_dir, at_batch):
    config = Config(model="mlp", hidden=(64,), backend="vectorized", epochs=3, limit=1024, test_limit=200)
    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    train, test = build_loaders(config, mnist)
    return Trainer(model, optimizer, Wrapped(train, at_batch), test, criterion=CrossEntropyLoss(backend="vectorized"),
                   out_dir=out_dir, config=config.to_dict(), progress=False, log=lambda line: None)


def cli_env():
    """The environment for a ``fastnn`` subprocess: one Numba cache shared by every test process."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "fastnn-tests-numba-cache"))
    return env


def start_cli(*arguments):
    return subprocess.Popen([sys.executable, "-m", "fastnn.cli", "train", *arguments], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout=120, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- NaN / inf loss ------------------------------------------------------------------------------------

def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, mnist):
    last = tmp_path / "last.npz"
    seen = {}

    def poison(epoch, step, x):
        if epoch == 2 and step == 1:
            seen["last.npz after epoch 1"] = last.read_bytes()
        if epoch == 2 and step == 3:
            x = x.copy()
            x[0, 0, 5, 5] = np.nan
        return x

    with pytest.raises(TrainingDiverged, match=f"epoch 2, step 3; the last good checkpoint is {last}"):
        small_trainer(mnist, tmp_path, poison).fit(3)
    assert last.read_bytes() == seen["last.npz after epoch 1"]
    model, _ = ckpt.load_model(last)
    assert ckpt.read(last).progress["epoch"] == 1
    assert all(np.isfinite(value).all() for value in model.state_dict().values())


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_cli_reports_divergence_with_epoch_and_step(tmp_path, capsys):
    status = main(["train", *SMALL_RUN, "--epochs", "1", "--lr", "1e6", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert status == 1 and "training diverged" in error and "at epoch 1, step" in error


# -- SIGKILL ---------------------------------------------------------------------------------------------

def writing_into(pid, directory):
    """Whether process ``pid`` has a file in ``directory`` open for writing (Linux /proc)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        try:
            if not os.readlink(fds / fd).startswith(f"{directory}/"):
                continue
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            return True
    return False


@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="needs Linux /proc to see files being written")
def test_sigkill_while_a_checkpoint_is_written_leaves_a_loadable_checkpoint(tmp_path):
    """Write a checkpoint after every batch and SIGKILL the process the moment it has a file of the
    run open for writing; three times, resuming (mid-epoch) in between. The last checkpoint must be
    whole every time, and the run must still resume."""
    run_dir = tmp_path / "run"
    last = run_dir / "last.npz"
    for attempt in range(3):
        arguments = ["--resume", str(run_dir)] if attempt else [*SMALL_RUN, "--hidden", "512", "--out", str(run_dir)]
        process = start_cli(*arguments, "--epochs", "1000", "--checkpoint-every", "1")
        try:
            wait_for(lambda: last.exists() or process.poll() is not None, what="a first checkpoint")
            wait_for(lambda: process.poll() is not None or writing_into(process.pid, run_dir),
                     what="a checkpoint being written")
            process.send_signal(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL, process.communicate()
        finally:
            process.kill()
            process.wait()
        saved = ckpt.read(last)  # whole: readable and complete
        ckpt.load_model(last)
        assert saved.progress["epoch"] > 0 or saved.progress["step"] > 0
        if (run_dir / "metrics.json").exists():
            json.loads((run_dir / "metrics.json").read_text())
    assert main(["train", "--resume", str(run_dir), "--epochs", str(saved.progress["epoch"] + 1)]) == 0


# -- existing output folder ---------------------------------------------------------------------------------

def test_existing_output_folder_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert str(out) in error and "--resume" in error
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(a_file)]) == 1
    assert a_file.read_text() == "x"


# -- bad checkpoint on resume ------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_resume_from_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, capsys, damage):
    run_dir = tmp_path / "run"
    assert main(["train", *SMALL_RUN, "--epochs", "1", "--limit", "256", "--out", str(run_dir)]) == 0
    last = run_dir / "last.npz"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:5000])
    else:
        np.savez(last, weights=np.zeros(3))
    damaged = last.read_bytes()
    metrics = (run_dir / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 1
    assert str(last) in capsys.readouterr().err
    assert last.read_bytes() == damaged and (run_dir / "metrics.json").read_text() == metrics


# -- Ctrl-C ------------------------------------------------------------------------------------------------

def test_ctrl_c_mid_epoch_saves_a_checkpoint_for_that_step(tmp_path, mnist):
    def interrupt(epoch, step, x):
        if epoch == 2 and step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at once, in this (the main) thread
        return x

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(TrainingInterrupted, match="epoch 2, step 5"):
            small_trainer(mnist, tmp_path, interrupt).fit(3)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the trainer as a KeyboardInterrupt: no checkpoint for the point reached")
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer put the usual handler back
    saved = ckpt.read(tmp_path / "last.npz")
    assert (saved.progress["epoch"], saved.progress["step"]) == (1, 5)
    assert saved.progress["totals"]["seen"] == 5 * 64


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_on_the_command_line_saves_and_says_how_to_resume(tmp_path, signum, status):
    """Ctrl-C, or the SIGTERM a scheduler or `kill` sends: the run stops at a step boundary,
    saves last.npz, says how to resume, and exits with 128 + the signal's number."""
    run_dir = tmp_path / "run"
    process = start_cli(*SMALL_RUN, "--epochs", "1000", "--out", str(run_dir))
    try:
        for line in process.stdout:  # the table line of epoch 1
            if line.split()[:1] == ["1"]:
                break
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == status, stderr
    assert f"Resume with: fastnn train --resume {run_dir}" in stderr
    assert ("by SIGTERM" in stderr) == (signum == signal.SIGTERM), stderr
    saved = ckpt.read(run_dir / "last.npz")
    done = saved.progress["epoch"]
    assert done >= 1 and len(json.loads((run_dir / "metrics.json").read_text())) == done
    assert main(["train", "--resume", str(run_dir), "--epochs", str(done + 1)]) == 0
    assert len(json.loads((run_dir / "metrics.json").read_text())) == done + 1


def test_weights_that_overflow_while_the_loss_is_finite_are_never_saved(tmp_path, mnist):
    """The last step of epoch 2 leaves an infinite weight (its loss was finite): the checkpoint
    due at the end of that epoch is refused, and the one of epoch 1 stays."""
    trainer = small_trainer(mnist, tmp_path, lambda epoch, step, x: x)
    step, calls = trainer.optimizer.step, []

    def overflowing_step():
        step()
        calls.append(1)
        if len(calls) == 2 * len(trainer.train_loader):
            trainer.model[1].weight.data[0, 0] = np.inf

    trainer.optimizer.step = overflowing_step
    with pytest.raises(TrainingDiverged, match=f"1.weight are not finite at the end of epoch 2; the last good "
                                               f"checkpoint is {tmp_path / 'last.npz'}"):
        trainer.fit(3)
    assert ckpt.read(tmp_path / "last.npz").progress["epoch"] == 1


def test_a_run_another_process_is_training_is_refused_and_left_alone(tmp_path, mnist, capsys):
    """While one process holds the run's lock (as a training run does), resuming that run is
    refused with a message, and its checkpoint is not touched; once the lock is gone it resumes."""
    import fcntl

    run_dir = tmp_path / "run"
    assert main(["train", *SMALL_RUN, "--epochs", "1", "--out", str(run_dir)]) == 0
    before = (run_dir / "last.npz").read_bytes()
    with open(run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 1
        assert f"another process is training in {run_dir}" in capsys.readouterr().err
        assert (run_dir / "last.npz").read_bytes() == before
    assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 0
    assert ckpt.read(run_dir / "last.npz").progress["epoch"] == 2
