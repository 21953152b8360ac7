"""The training loop: train_epoch, evaluate, Trainer (history, schedule, checkpoints, resume),
Config and the builders, and reproducibility across processes."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import fastnn.train as train_module
from fastnn import checkpoint as ckpt
from fastnn.data import DataLoader, load_mnist
from fastnn.losses import CrossEntropyLoss
from fastnn.models import mlp
from fastnn.nn import Flatten, Linear, Sequential
from fastnn.optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from fastnn.train import (HISTORY_FIELDS, MODEL_DEFAULTS, Config, Trainer, TrainingDiverged, TrainingInterrupted,
                          build_loaders, build_model, build_optimizer, build_schedule, evaluate, load_jit_kernels,
                          train_epoch)


def bands(n, seed=0):
    """Synthetic 28x28 uint8 images whose class c (0..9) is a bright horizontal band at rows 2c+4, 2c+5."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 4: 2 * c + 6] = 255
    return images, labels


def linear_model(seed=0):
    return Sequential(Flatten(), Linear(784, 10, rng=seed, backend="vectorized"))


def batches_of(loader):
    xs, ys = zip(*loader)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir, download=False)


# -- evaluate and train_epoch ---------------------------------------------------------------------

def test_evaluate_matches_a_direct_computation_with_an_uneven_last_batch():
    images, labels = bands(50)
    loader = DataLoader(images, labels, batch_size=7)  # 7 batches of 7, then 1 of 1
    model = linear_model()
    result = evaluate(model, loader, CrossEntropyLoss(backend="vectorized"))
    x, y = batches_of(loader)
    logits = x.reshape(len(x), -1).astype(np.float64) @ model[1].weight.data + model[1].bias.data
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert result["loss"] == pytest.approx(-log_probs[np.arange(len(y)), y].mean(), rel=1e-5)
    assert result["accuracy"] == np.mean(logits.argmax(axis=1) == y)


def test_evaluate_runs_in_eval_mode_and_restores_the_mode():
    images, labels = bands(64)
    loader = DataLoader(images, labels, batch_size=16)
    model = mlp(hidden=(32,), batchnorm=True, dropout=0.5, backend="vectorized")
    criterion = CrossEntropyLoss(backend="vectorized")
    running = {k: v for k, v in model.state_dict().items() if "running" in k}
    first = evaluate(model, loader, criterion)
    assert evaluate(model, loader, criterion) == first  # no dropout masks drawn: the same twice
    assert all(m.training for _, m in model.named_modules())
    for key, value in running.items():  # batch statistics not used, running ones not updated
        np.testing.assert_array_equal(model.state_dict()[key], value)
    model.eval()
    assert evaluate(model, loader, criterion) == first
    assert not any(m.training for _, m in model.named_modules())


def test_train_epoch_with_zero_learning_rate_reports_what_evaluate_computes():
    """lr 0: the weights never change, so the running figures must equal a plain evaluation."""
    images, labels = bands(100)
    loader = DataLoader(images, labels, batch_size=16, shuffle=True, seed=1)  # last batch of 4
    model = linear_model()
    criterion = CrossEntropyLoss(backend="vectorized")
    result = train_epoch(model, loader, criterion, SGD(model.parameters(), lr=0.0), progress=False)
    expected = evaluate(model, loader, criterion)
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert result["accuracy"] == expected["accuracy"]
    assert result["images_per_sec"] == pytest.approx(100 / result["seconds"])


def test_train_epoch_learns_separable_classes():
    images, labels = bands(512)
    loader = DataLoader(images, labels, batch_size=32, shuffle=True, seed=0)
    model = mlp(hidden=(32,), backend="vectorized")
    optimizer = SGD(model.parameters(), lr=0.01)
    results = [train_epoch(model, loader, CrossEntropyLoss(), optimizer, progress=False) for _ in range(3)]
    losses = [r["loss"] for r in results]
    assert losses[0] > losses[1] > losses[2]
    assert results[0]["accuracy"] < 0.9 < results[-1]["accuracy"]


def test_nan_loss_raises_naming_epoch_and_step_before_the_optimizer_steps():
    images, labels = bands(48)
    x, y = batches_of(DataLoader(images, labels, batch_size=16))
    poisoned = x[32:].copy()
    poisoned[0, 0, 0, 0] = np.nan
    loader = [(x[:16], y[:16]), (x[16:32], y[16:32]), (poisoned, y[32:])]
    model = linear_model()
    saved = {}
    with pytest.raises(TrainingDiverged, match="epoch 4, step 3") as error:
        train_epoch(model, loader, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), progress=False, epoch=4,
                    after_step=lambda step: saved.update(model.state_dict()))
    assert (error.value.epoch, error.value.step) == (4, 3) and error.value.reason == "the loss is nan"
    for key, value in model.state_dict().items():  # unchanged since step 2, and finite
        np.testing.assert_array_equal(value, saved[key])
        assert np.isfinite(value).all()


def test_progress_bar_shows_running_loss_and_accuracy(monkeypatch):
    shown, bars = [], []

    class RecordingBar:
        def __init__(self, **options):
            bars.append(options)

        def set_postfix(self, ordered_dict=None, refresh=True, **values):
            shown.append(values)

        def update(self, n=1):
            pass

        def close(self):
            pass

    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    images, labels = bands(8 * 45)
    model = linear_model()
    train_epoch(model, DataLoader(images, labels, batch_size=8), CrossEntropyLoss(),
                SGD(model.parameters(), lr=0.01), desc="epoch 3")
    assert len(shown) == 45 // train_module.POSTFIX_EVERY and set(shown[0]) == {"loss", "acc"}
    assert shown[-1]["acc"].endswith("%") and float(shown[-1]["loss"]) > 0
    assert len(bars) == 1 and bars[0]["total"] == 45 and bars[0]["desc"] == "epoch 3" and not bars[0]["disable"]


# -- Trainer ---------------------------------------------------------------------------------------

def small_trainer(out_dir=None, epochs_for_schedule=2, **options):
    images, labels = bands(96)
    train = DataLoader(images[:64], labels[:64], batch_size=16, shuffle=True, seed=0)
    test = DataLoader(images[64:], labels[64:], batch_size=16)
    model = linear_model()
    optimizer = SGD(model.parameters(), lr=0.1)
    schedule = CosineAnnealingLR(optimizer, T_max=epochs_for_schedule)
    return Trainer(model, optimizer, train, test, schedule=schedule, out_dir=out_dir, progress=False,
                   log=lambda line: None, **options)


def test_history_records_every_field_and_the_lr_each_epoch_used(tmp_path):
    trainer = small_trainer(tmp_path, config={"note": "x"})
    history = trainer.fit(2)
    assert [tuple(r) for r in history] == [HISTORY_FIELDS] * 2
    assert [r["epoch"] for r in history] == [1, 2]
    # cosine over 2 epochs: lr(e) = 0.1 (1 + cos(pi e / 2)) / 2 -> 0.1 in epoch 1, 0.05 in epoch 2
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.05])
    assert trainer.optimizer.lr == pytest.approx(0.0)
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(HISTORY_FIELDS) and len(rows) == 3
    assert float(rows[2].split(",")[4]) == history[1]["test_accuracy"]
    saved = ckpt.read(tmp_path / "last.npz")
    assert saved.progress["epoch"] == 2 and saved.progress["history"] == history and saved.config == {"note": "x"}


def test_a_trainer_refuses_a_folder_another_process_trains_in(tmp_path):
    """Trainer.fit with an out_dir holds the run lock as ``fastnn train`` does: while another
    holder has the folder's .lock it raises RunInUse and writes nothing. Inside ``run_lock``
    (as ``run`` calls it) fit trains, and the lock file is gone afterwards."""
    import fcntl

    with open(tmp_path / ".lock", "a") as held:  # a lock of its own open file: as another process
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(train_module.RunInUse, match="another process is training"):
            small_trainer(tmp_path).fit(1)
        assert not (tmp_path / "last.npz").exists()
    with train_module.run_lock(tmp_path):
        assert len(small_trainer(tmp_path).fit(1)) == 1
    assert (tmp_path / "last.npz").exists() and not (tmp_path / ".lock").exists()


def test_taking_the_run_lock_removes_what_a_killed_checkpoint_write_left(tmp_path):
    """A process killed inside atomic_write leaves its temporary file; the next holder of the
    folder's lock deletes it, and nothing else."""
    (tmp_path / "last.npz").write_bytes(b"kept")
    partial = tmp_path / ckpt._temporary_name(tmp_path / "last.npz")  # the name atomic_write uses
    partial.write_bytes(b"half a checkpoint")
    others = [tmp_path / ".notes.tmp", tmp_path / "run.tmp", tmp_path / ".last.npz.x.0badcafe.tmp"]
    for path in others:
        path.write_text("mine")
    with train_module.run_lock(tmp_path):
        assert not partial.exists()
        assert all(path.exists() for path in others) and (tmp_path / "last.npz").read_bytes() == b"kept"


def test_best_checkpoint_is_the_epoch_with_the_highest_test_accuracy(tmp_path, monkeypatch):
    accuracies = iter([0.5, 0.7, 0.6])
    monkeypatch.setattr(train_module, "evaluate", lambda *args: {"loss": 1.0, "accuracy": next(accuracies)})
    small_trainer(tmp_path, epochs_for_schedule=3).fit(3)
    assert ckpt.read(tmp_path / "best.npz").progress["epoch"] == 2
    assert ckpt.read(tmp_path / "last.npz").progress["epoch"] == 3


def test_fit_continues_to_the_requested_epoch_count(tmp_path):
    trainer = small_trainer(tmp_path, epochs_for_schedule=3)
    trainer.fit(1)
    assert len(trainer.fit(3)) == 3 and trainer.epoch == 3


class StopAt:
    """A loader wrapper that asks ``trainer`` to stop while it yields batch ``step`` of epoch ``epoch``."""

    def __init__(self, loader, epoch, step):
        self.loader, self.epoch, self.step, self.trainer = loader, epoch, step, None

    rng = property(lambda self: self.loader.rng)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for step, batch in enumerate(self.loader, start=1):
            if self.trainer.epoch + 1 == self.epoch and step == self.step:
                self.trainer.request_stop()
            yield batch


def mnist_trainer(config, mnist, out_dir, stop_at=None):
    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    train, test = build_loaders(config, mnist)
    if stop_at is not None:
        train = StopAt(train, *stop_at)
    trainer = Trainer(model, optimizer, train, test, criterion=CrossEntropyLoss(backend=config.backend),
                      schedule=build_schedule(config, optimizer), out_dir=out_dir, config=config.to_dict(),
                      progress=False, log=lambda line: None)
    if stop_at is not None:
        train.trainer = trainer
    return trainer


def assert_same_run(path_a, path_b):
    a, b = ckpt.read(path_a), ckpt.read(path_b)
    for part in ("model", "optimizer", "schedule"):
        assert getattr(a, part).keys() == getattr(b, part).keys()
        for key in getattr(a, part):
            np.testing.assert_array_equal(getattr(a, part)[key], getattr(b, part)[key], err_msg=f"{part} {key}")
    assert a.rng == b.rng
    timing = ("seconds", "images_per_sec")
    strip = lambda history: [{k: v for k, v in r.items() if k not in timing} for r in history]  # noqa: E731
    assert strip(a.progress["history"]) == strip(b.progress["history"])


@pytest.mark.parametrize("stop_at", [(2, 5), (1, 32)], ids=["mid-epoch", "after-last-batch"])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, mnist, stop_at):
    """Dropout, batch norm, augmentation (the loader draws shifts every batch) and a schedule: every
    piece of state must come back for the resumed run to match the uninterrupted one bit for bit."""
    config = Config(model="mlp", hidden=(64,), batchnorm=True, dropout=0.3, backend="vectorized", epochs=3,
                    lr=0.05, schedule="cosine", augment=True, limit=2048, test_limit=300, seed=3)
    mnist_trainer(config, mnist, tmp_path / "straight").fit(3)

    with pytest.raises(TrainingInterrupted) as stopped:
        mnist_trainer(config, mnist, tmp_path / "resumed", stop_at=stop_at).fit(3)
    assert (stopped.value.epoch, stopped.value.step) == stop_at
    saved = ckpt.read(tmp_path / "resumed" / "last.npz")
    assert (saved.progress["epoch"], saved.progress["step"]) == (stop_at[0] - 1, stop_at[1])
    resumed = mnist_trainer(config, mnist, tmp_path / "resumed")
    resumed.resume(tmp_path / "resumed" / "last.npz")
    resumed.fit(3)
    assert_same_run(tmp_path / "straight" / "last.npz", tmp_path / "resumed" / "last.npz")


# -- Config and builders ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("model", "resnet"), ("backend", "gpu"), ("optimizer", "rmsprop"),
                                          ("schedule", "linear"), ("dropout", 1.0), ("hidden", ()),
                                          ("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("limit", 0)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        Config(**{field: value})


def test_config_backend_defaults_to_the_environments_choice(monkeypatch):
    monkeypatch.setenv("FASTNN_BACKEND", "reference")
    assert Config().backend == "reference" and Config(backend="jit").backend == "jit"
    monkeypatch.delenv("FASTNN_BACKEND")
    assert Config().backend == "jit"


def test_config_rejects_mlp_options_for_other_models():
    with pytest.raises(ValueError, match="batchnorm"):
        Config(model="lenet", batchnorm=True)


def test_config_defaults_per_model_and_round_trip():
    for model, recipe in MODEL_DEFAULTS.items():
        config = Config.for_model(model, seed=4)
        assert config.model == model and config.seed == 4
        assert {k: getattr(config, k) for k in recipe} == recipe
        assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert Config(optimizer="adamw").weight_decay == 0.01 and Config(optimizer="adam").weight_decay == 0.0
    with pytest.raises(ValueError, match="unknown configuration keys"):
        Config.from_dict({"modle": "mlp"})


@pytest.mark.parametrize("name, cls, expected", [
    ("sgd", SGD, {"momentum": 0.0, "nesterov": False}),
    ("momentum", SGD, {"momentum": 0.9, "nesterov": False}),
    ("nesterov", SGD, {"momentum": 0.9, "nesterov": True}),
    ("adam", Adam, {"weight_decay": 0.0}),
    ("adamw", AdamW, {"weight_decay": 0.01}),
])
def test_build_optimizer(name, cls, expected):
    config = Config(optimizer=name, lr=0.3, hidden=(8,))
    optimizer = build_optimizer(config, build_model(config).parameters())
    assert type(optimizer) is cls and optimizer.lr == 0.3
    assert {k: getattr(optimizer, k) for k in expected} == expected


def test_build_schedule():
    config = Config(hidden=(8,), epochs=7)
    optimizer = build_optimizer(config, build_model(config).parameters())
    assert build_schedule(config, optimizer) is None
    step = build_schedule(Config(hidden=(8,), epochs=7, schedule="step"), optimizer)
    assert isinstance(step, StepLR) and step.step_size == 2 and step.gamma == 0.1
    cosine = build_schedule(Config(hidden=(8,), epochs=7, schedule="cosine"), optimizer)
    assert isinstance(cosine, CosineAnnealingLR) and cosine.T_max == 7


def test_loaders_slice_the_data_and_only_the_training_loader_shuffles(mnist):
    config = Config(limit=100, test_limit=30, batch_size=32)
    train, test = build_loaders(config, mnist)
    x, y = batches_of(train)
    assert len(y) == 100 and sorted(y) == sorted(mnist.train_labels[:100])
    assert not np.array_equal(y, mnist.train_labels[:100])
    np.testing.assert_array_equal(batches_of(test)[1], mnist.test_labels[:30])


# -- reproducibility across processes ----------------------------------------------------------------

def cli_env():
    """The environment for a ``fastnn`` subprocess: one Numba cache shared by every test process."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "fastnn-tests-numba-cache"))
    return env


def train_in_subprocess(out_dir, backend, seed):
    command = [sys.executable, "-m", "fastnn.cli", "train", "--model", "mlp", "--hidden", "64", "--dropout", "0.2",
               "--backend", backend, "--epochs", "1", "--limit", "2000", "--test-limit", "200", "--seed", str(seed),
               "--out", str(out_dir), "--no-progress"]
    subprocess.run(command, env=cli_env(), check=True, capture_output=True, timeout=300)
    return ckpt.read(out_dir / "last.npz").model


@pytest.mark.parametrize("backend", ["vectorized", "jit"])
def test_same_seed_and_backend_give_bit_identical_weights_in_two_processes(tmp_path, backend):
    first = train_in_subprocess(tmp_path / "a", backend, seed=7)
    second = train_in_subprocess(tmp_path / "b", backend, seed=7)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    if backend == "vectorized":  # and the seed matters
        other = train_in_subprocess(tmp_path / "c", backend, seed=8)
        assert not np.array_equal(other["1.weight"], first["1.weight"])


# --- loading the jit kernels before the first epoch (load_jit_kernels) ---------------------------

def digit_like(n, seed=0):
    """n random 28 x 28 uint8 images and labels 0-9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def test_loading_the_jit_kernels_leaves_the_run_as_it_was():
    """It trains and evaluates copies: a run that loaded them then trains exactly as one that did
    not (weights, Adam's state, batch-norm statistics and dropout's generator untouched)."""
    images, labels = digit_like(12)

    def run(load):
        model = mlp(hidden=(16,), batchnorm=True, dropout=0.3, seed=1, backend="jit")
        optimizer, criterion = Adam(model.parameters(), lr=0.01), CrossEntropyLoss(backend="jit")
        loader = DataLoader(images, labels, 4, shuffle=True, seed=2)
        train_epoch(model, loader, criterion, optimizer, progress=False)  # state for the copies to carry
        if load:
            logged = []
            load_jit_kernels(model, optimizer, criterion, DataLoader(images[:2], labels[:2], 2), log=logged.append)
            assert "loading the jit kernels" in logged[0]
        train_epoch(model, loader, criterion, optimizer, progress=False)
        return model.state_dict()

    loaded, plain = run(True), run(False)
    assert loaded.keys() == plain.keys()
    for name in plain:
        np.testing.assert_array_equal(loaded[name], plain[name], err_msg=name)


KERNELS_COVERED = """
import importlib, pkgutil
import numpy as np
from numba.core.registry import CPUDispatcher
import fastnn.kernels.jit as jit
from fastnn import models
from fastnn.data import DataLoader
from fastnn.losses import CrossEntropyLoss
from fastnn.optim import SGD, Adam
from fastnn.train import evaluate, load_jit_kernels, train_epoch

def compiled():
    modules = [importlib.import_module("fastnn.kernels.jit." + m.name) for m in pkgutil.iter_modules(jit.__path__)]
    return sum(len(d.signatures) for m in modules for d in vars(m).values() if isinstance(d, CPUDispatcher))

rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8), rng.integers(0, 10, 16)
for name, model, make_optimizer in [
        ("lenet", models.lenet(backend="jit"), lambda p: Adam(p, lr=0.001)),
        ("seed_cnn", models.seed_cnn(backend="jit"), lambda p: SGD(p, lr=0.01, momentum=0.9)),
        ("mlp", models.mlp(batchnorm=True, dropout=0.2, backend="jit"), lambda p: SGD(p, lr=0.01))]:
    optimizer, criterion = make_optimizer(model.parameters()), CrossEntropyLoss(backend="jit")
    load_jit_kernels(model, optimizer, criterion, DataLoader(images[:2], labels[:2], 2), log=lambda line: None)
    before = compiled()
    train_epoch(model, DataLoader(images, labels, 8, shuffle=True), criterion, optimizer, progress=False)
    evaluate(model, DataLoader(images, labels, 16), criterion)
    assert compiled() == before, name + ": the epoch compiled or loaded kernels the warm-up had not"
print("ok")
"""


def test_loading_the_jit_kernels_covers_an_epoch_and_an_evaluation():
    """In a fresh process: after load_jit_kernels, a training epoch and an evaluation of the
    zoo's models compile (or load from the disk cache) no further kernel."""
    done = subprocess.run([sys.executable, "-c", KERNELS_COVERED], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
