"""Training: one epoch (``train_epoch``), evaluation (``evaluate``), and whole runs (``Trainer``, ``fit``, ``run``).

A run is described by a ``Config`` (model, backend, optimizer, schedule, seed, data slice, ...)
from which ``build_model``, ``build_optimizer``, ``build_schedule`` and ``build_loaders`` make
its parts; the config is stored in every checkpoint so that a run can be resumed, or its model
rebuilt, from the checkpoint alone.

A ``Trainer`` with an output directory writes, after every epoch, ``last.npz`` (and ``best.npz``
when the test accuracy improved) plus ``metrics.csv`` and ``metrics.json``. Ctrl-C (SIGINT) asks
it to stop at the end of the current batch: it then writes ``last.npz`` for that point, in the
middle of the epoch, and raises ``TrainingInterrupted``. Resuming from such a checkpoint replays
the epoch's batch order (the loader's Generator is saved as it was when the epoch began) and
skips the batches already done, so an interrupted and resumed run ends bit-identical to an
uninterrupted one. A loss that is NaN or infinite raises ``TrainingDiverged`` before the
optimizer takes the step, and so do weights that are not finite when a checkpoint is due; no
checkpoint is written after that, so the last one on disk is good.
"""
import contextlib
import copy
import csv
import dataclasses
import fcntl
import io
import json
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt
from .backend import resolve
from .losses import CrossEntropyLoss
from .models import MODELS
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                  "seconds", "images_per_sec", "lr")
POSTFIX_EVERY = 20  # batches between updates of the progress bar's loss/accuracy figures


class TrainingDiverged(RuntimeError):
    """The training loss, or a parameter, became NaN or infinite at ``step`` (batches done, from 1;
    0: at the end) of epoch ``epoch`` (from 1). ``reason`` says what; ``checkpoint`` is the last
    good checkpoint on disk, if any."""

    def __init__(self, epoch, step, reason, checkpoint=None):
        self.epoch, self.step, self.reason, self.checkpoint = epoch, step, reason, checkpoint
        where = f"at epoch {epoch}, step {step}" if step else f"at the end of epoch {epoch}"
        kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
        super().__init__(f"training diverged: {reason} {where}{kept}")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInUse(RuntimeError):
    """Another process is training in this run's folder (it holds ``out_dir/.lock``)."""

    def __init__(self, out_dir):
        super().__init__(f"another process is training in {out_dir} (it holds {Path(out_dir) / '.lock'}); "
                         f"wait for it to end, or choose another --out")


_locks_held = set()  # the .lock files this process holds


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold an exclusive lock on ``out_dir/.lock`` for as long as a run trains there, so that a
    second process training or resuming the same run is refused instead of overwriting its
    checkpoints. The operating system drops the lock when the process ends, however it ends;
    the file is removed on the way out (a killed process leaves it, unlocked and harmless).
    Taking it again inside the same process (``run`` holds it around ``Trainer.fit``, which
    takes it too) is a no-op. On taking it, the temporary files of checkpoint writes that a
    killed process left half-done are removed (``checkpoint.remove_partial_writes``).
    Raises ``RunInUse``."""
    path = (Path(out_dir) / ".lock").resolve()
    if path in _locks_held:
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(out_dir) from None
        _locks_held.add(path)
        ckpt.remove_partial_writes(path.parent)
        try:
            yield
        finally:
            _locks_held.discard(path)
            path.unlink(missing_ok=True)


class TrainingInterrupted(Exception):
    """Training stopped on request (Ctrl-C, SIGTERM, ``request_stop``) after ``step`` batches of
    epoch ``epoch`` (from 1); ``step`` 0: after the whole of epoch ``epoch``. ``signum`` is the
    signal that asked for the stop (SIGINT for a request from code)."""

    def __init__(self, epoch, step, checkpoint=None, signum=signal.SIGINT):
        self.epoch, self.step, self.checkpoint, self.signum = epoch, step, checkpoint, signum
        where = f"at epoch {epoch}, step {step}" if step else f"after epoch {epoch}"
        saved = f"; checkpoint saved to {checkpoint}" if checkpoint else ""
        by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        super().__init__(f"training interrupted{by} {where}{saved}")


# -- one epoch ----------------------------------------------------------------------------------

@dataclasses.dataclass
class EpochTotals:
    """Running sums over the batches of one epoch (kept in checkpoints taken mid-epoch)."""

    loss_sum: float = 0.0  # sum over examples of the loss (batch mean times batch size)
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def summary(self):
        """``dict(loss, accuracy, seconds, images_per_sec)`` of the batches so far."""
        seen = max(self.seen, 1)
        return {"loss": self.loss_sum / seen, "accuracy": self.correct / seen, "seconds": self.seconds,
                "images_per_sec": self.seen / self.seconds if self.seconds > 0 else 0.0}


def train_epoch(model, loader, criterion, optimizer, *, progress=True, desc="train", epoch=1,
                totals=None, start_step=0, after_step=None):
    """Train ``model`` on one pass over ``loader``; returns ``dict(loss, accuracy, seconds, images_per_sec)``.

    Each batch (x (B, ...), y (B,) int): forward, loss, check it is finite, backward, optimizer
    step. A tqdm bar (if ``progress``) shows the running mean loss and accuracy.
    Resuming an epoch: ``start_step`` batches of the loader are drawn and skipped (the loader
    must replay the same order), and ``totals`` (an ``EpochTotals``, updated in place) carries
    the sums of the batches done before. ``after_step(step)`` is called after each step
    (``step`` = batches done). Raises ``TrainingDiverged(epoch, step)`` on a NaN/inf loss,
    before the optimizer takes that step.
    """
    model.train()
    totals = EpochTotals() if totals is None else totals
    bar = tqdm(total=len(loader), initial=start_step, desc=desc, disable=not progress, leave=False,
               unit="batch", dynamic_ncols=True)
    last = time.perf_counter()
    try:
        for step, (x, y) in enumerate(loader, start=1):
            if step <= start_step:
                continue
            output = model(x)
            loss = criterion(output, y)
            value = float(loss)
            if not math.isfinite(value):
                raise TrainingDiverged(epoch, step, f"the loss is {value}")
            optimizer.zero_grad()
            model.backward(loss.backward(), input_grad=False)  # the input is data
            optimizer.step()
            totals.loss_sum += value * len(y)
            totals.correct += int(np.count_nonzero(output.argmax(axis=1) == y))
            totals.seen += len(y)
            if step % POSTFIX_EVERY == 0:
                bar.set_postfix(loss=f"{totals.loss_sum / totals.seen:.4f}",
                                acc=f"{totals.correct / totals.seen:.2%}", refresh=False)
            now = time.perf_counter()
            totals.seconds, last = totals.seconds + (now - last), now
            bar.update()
            if after_step is not None:
                after_step(step)
    finally:
        bar.close()
    return totals.summary()


def evaluate(model, loader, criterion):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode: ``dict(loss, accuracy)``.

    The model is put back in the mode (train or eval) it was in.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        for x, y in loader:
            output = model(x)
            loss_sum += float(criterion(output, y)) * len(y)
            correct += int(np.count_nonzero(output.argmax(axis=1) == y))
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate: the loader yielded no examples")
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


# -- whole runs ---------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised inside the epoch loop when a stop was requested."""


class Trainer:
    """Runs epochs: train, evaluate on the test loader, step the schedule, record, checkpoint.

    ``history`` is a list of per-epoch dicts (``HISTORY_FIELDS``: epoch from 1, train/test loss
    and accuracy (fractions), training seconds, training images per second, and the lr used).
    With ``out_dir``, checkpoints and metrics are written there (see the module docstring), and
    ``checkpoint_every`` > 0 also writes ``last.npz`` every that many batches. ``config`` (a
    JSON-serialisable dict) is stored in the checkpoints. ``train_loader`` is a
    ``fastnn.data.DataLoader`` (or anything with ``len``, iteration and its Generator ``.rng``).
    """

    def __init__(self, model, optimizer, train_loader, test_loader, *, criterion=None, schedule=None,
                 out_dir=None, config=None, progress=True, checkpoint_every=0, log=print):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.train_loader, self.test_loader = train_loader, test_loader
        self.criterion = criterion if criterion is not None else CrossEntropyLoss()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.config = config or {}
        self.progress, self.checkpoint_every, self.log = progress, checkpoint_every, log
        self.epoch = 0          # epochs completed
        self.step = 0           # batches completed in the epoch under way
        self.totals = EpochTotals()
        self.history = []
        self.best_accuracy = None
        self._epoch_rng_state = train_loader.rng.bit_generator.state
        self._stop_requested = False

    @property
    def last_path(self):
        return self.out_dir / "last.npz" if self.out_dir is not None else None

    def _position(self):
        """(epoch, step) as exceptions report them: the epoch under way and its batches done,
        or, between epochs, the last complete epoch and step 0."""
        return self.epoch + (self.step > 0), self.step

    def request_stop(self):
        """Stop at the end of the current batch (what Ctrl-C does during ``fit``)."""
        self._stop_requested = True

    # -- checkpoints --

    def save(self, path):
        """Write the whole training state to ``path`` (atomically).

        Raises TrainingDiverged, writing nothing, if a parameter is not finite (a step can
        overflow the weights while its loss was still finite).
        """
        broken = [name for name, p in self.model.named_parameters() if not np.isfinite(p.data).all()]
        if broken:
            raise TrainingDiverged(*self._position(), f"parameters {', '.join(broken)} are not finite")
        progress = {"epoch": self.epoch, "step": self.step, "totals": dataclasses.asdict(self.totals),
                    "best_accuracy": self.best_accuracy, "history": self.history}
        ckpt.write(path, self.model, self.optimizer, self.schedule, config=self.config, progress=progress,
                   rng=ckpt.rng_states(self.model, self._epoch_rng_state))

    def resume(self, checkpoint):
        """Continue from a checkpoint (a path or a ``checkpoint.Checkpoint``): restores every part.

        Raises CheckpointError, having changed nothing, if it does not fit.
        """
        if not isinstance(checkpoint, ckpt.Checkpoint):
            checkpoint = ckpt.read(checkpoint)
        progress = checkpoint.progress
        try:
            epoch, step, totals = int(progress["epoch"]), int(progress["step"]), EpochTotals(**progress["totals"])
            history, best = list(progress["history"]), progress["best_accuracy"]
        except (KeyError, TypeError, ValueError) as error:
            raise ckpt.CheckpointError(f"{checkpoint.path}: invalid progress record ({error!r})") from None
        ckpt.restore(checkpoint, self.model, self.optimizer, self.schedule, self.train_loader)
        self.epoch, self.step, self.totals, self.history, self.best_accuracy = epoch, step, totals, history, best
        self._epoch_rng_state = self.train_loader.rng.bit_generator.state

    def _write_metrics(self):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        for name, content in (("metrics.csv", text.getvalue()), ("metrics.json", json.dumps(self.history, indent=1))):
            ckpt.atomic_write(self.out_dir / name, lambda f, c=content: f.write(c.encode()))

    # -- the loop --

    def _after_step(self, step):
        self.step = step
        if self._stop_requested:
            raise _Stop
        if self.checkpoint_every and step % self.checkpoint_every == 0 and self.out_dir is not None:
            self.save(self.last_path)

    def fit(self, epochs):
        """Train until ``epochs`` epochs are complete in all; returns ``history``.

        Raises TrainingDiverged (the last checkpoint on disk is left as it was) or, after a stop
        request, Ctrl-C or SIGTERM, TrainingInterrupted (``last.npz`` written for the point reached).
        With ``out_dir``, holds ``run_lock(out_dir)`` while it trains (RunInUse if another process
        does).
        """
        if self.out_dir is None:
            return self._fit(epochs)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out_dir):
            return self._fit(epochs)

    def _fit(self, epochs):
        self._stop_requested, self._stop_signal = False, signal.SIGINT
        on_main_thread = threading.current_thread() is threading.main_thread()
        # Ctrl-C and SIGTERM (what schedulers and `kill` send) both stop at the next step boundary
        # with a checkpoint; the same signal again acts at once, as it did before fit.
        previous = {}
        if on_main_thread:
            for signum in STOP_SIGNALS:
                handler = signal.getsignal(signum)
                # None: a handler not set from Python; restore Python's default one for SIGINT.
                previous[signum] = handler if handler is not None else (
                    signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

        def on_stop_signal(signum, frame):
            self._stop_signal = signum
            self.request_stop()
            signal.signal(signum, previous[signum])

        for signum in previous:
            signal.signal(signum, on_stop_signal)
        try:
            try:
                while self.epoch < epochs:
                    self._run_epoch()
                    if self._stop_requested:
                        raise _Stop
            except _Stop:
                if self.out_dir is not None:
                    self.save(self.last_path)
                raise TrainingInterrupted(*self._position(), self.last_path, self._stop_signal) from None
        except TrainingDiverged as error:
            kept = self.last_path if self.last_path is not None and self.last_path.exists() else None
            raise TrainingDiverged(error.epoch, error.step, error.reason, kept) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.history

    def _run_epoch(self):
        number = self.epoch + 1
        lr = self.optimizer.lr
        train = train_epoch(self.model, self.train_loader, self.criterion, self.optimizer,
                            progress=self.progress, desc=f"epoch {number}", epoch=number,
                            totals=self.totals, start_step=self.step, after_step=self._after_step)
        test = evaluate(self.model, self.test_loader, self.criterion)
        if self.schedule is not None:
            self.schedule.step()
        record = {"epoch": number, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                  "test_loss": test["loss"], "test_accuracy": test["accuracy"], "seconds": train["seconds"],
                  "images_per_sec": train["images_per_sec"], "lr": lr}
        self.history.append(record)
        self.epoch, self.step, self.totals = number, 0, EpochTotals()
        self._epoch_rng_state = self.train_loader.rng.bit_generator.state
        improved = self.best_accuracy is None or test["accuracy"] > self.best_accuracy
        if improved:
            self.best_accuracy = test["accuracy"]
        if self.out_dir is not None:
            self.save(self.last_path)
            if improved:
                self.save(self.out_dir / "best.npz")
            self._write_metrics()
        self.log(format_epoch(record))


def fit(model, optimizer, train_loader, test_loader, epochs, **options):
    """``Trainer(model, optimizer, train_loader, test_loader, **options).fit(epochs)``: the history."""
    return Trainer(model, optimizer, train_loader, test_loader, **options).fit(epochs)


TABLE_HEADER = (f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'test loss':>9}  {'test acc':>8}  "
                f"{'lr':>8}  {'seconds':>7}  {'images/s':>8}")


def format_epoch(record):
    """One line of the per-epoch table (columns as ``TABLE_HEADER``)."""
    return (f"{record['epoch']:>5}  {record['train_loss']:>10.4f}  {record['train_accuracy']:>9.2%}  "
            f"{record['test_loss']:>9.4f}  {record['test_accuracy']:>8.2%}  {record['lr']:>8.3g}  "
            f"{record['seconds']:>7.2f}  {record['images_per_sec']:>8.0f}")


# -- configuration ------------------------------------------------------------------------------

@dataclasses.dataclass
class Config:
    """Everything that determines a training run's result (stored in its checkpoints).

    ``hidden``, ``batchnorm`` and ``dropout`` apply to the mlp only. ``backend`` None means the
    one ``fastnn.backend.resolve`` picks (``$FASTNN_BACKEND``, else jit). ``weight_decay`` None means
    the optimizer's default (0.01 for adamw, else 0); ``step_size`` None means epochs // 3 (at
    least 1). ``limit`` / ``test_limit``: use only the first that many training / test images.
    ``data_dir`` None: ``load_mnist``'s search order.
    """

    model: str = "mlp"
    hidden: tuple = (512,)
    batchnorm: bool = False
    dropout: float = 0.0
    backend: str = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "momentum"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = None
    schedule: str = "none"
    step_size: int = None
    gamma: float = 0.1
    seed: int = 0
    augment: bool = False
    data_dir: str = None
    limit: int = None
    test_limit: int = None

    def __post_init__(self):
        def require(ok, name, value, what):
            if not ok:
                raise ValueError(f"{name} must be {what}, got {value!r}")

        require(self.model in MODELS, "model", self.model, f"one of {', '.join(MODELS)}")
        self.backend = resolve(self.backend)  # None: use_backend, $FASTNN_BACKEND or the default
        require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        require(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {', '.join(SCHEDULES)}")
        self.hidden = tuple(self.hidden)
        require(len(self.hidden) > 0 and all(isinstance(h, int) and h > 0 for h in self.hidden),
                "hidden", self.hidden, "one or more positive integers")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        if self.model != "mlp":
            mlp_only = [name for name in ("hidden", "batchnorm", "dropout")
                        if getattr(self, name) != Config.__dataclass_fields__[name].default]
            require(not mlp_only, ", ".join(mlp_only), [getattr(self, n) for n in mlp_only],
                    f"left at the default: they apply to the mlp, not {self.model}")
        for name in ("epochs", "batch_size"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, getattr(self, name),
                    "a positive integer")
        for name in ("limit", "test_limit"):
            value = getattr(self, name)
            require(value is None or (isinstance(value, int) and value >= 1), name, value, "a positive integer")
        require(self.lr > 0, "lr", self.lr, "positive")
        require(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        if self.weight_decay is None:
            self.weight_decay = 1e-2 if self.optimizer == "adamw" else 0.0
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        if self.step_size is None:
            self.step_size = max(1, self.epochs // 3)
        require(isinstance(self.step_size, int) and self.step_size >= 1, "step_size", self.step_size,
                "a positive integer")

    @classmethod
    def for_model(cls, model, **options):
        """The configuration with ``model``'s default recipe (``MODEL_DEFAULTS``), then ``options``."""
        if model not in MODEL_DEFAULTS:
            raise ValueError(f"model must be one of {', '.join(MODEL_DEFAULTS)}, got {model!r}")
        return cls(**{**MODEL_DEFAULTS[model], **options, "model": model})

    @classmethod
    def from_dict(cls, values):
        """A Config from ``to_dict()`` output (e.g. a checkpoint's); unknown keys raise ValueError."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**values)

    def to_dict(self):
        values = dataclasses.asdict(self)
        values["hidden"] = list(self.hidden)
        return values


#: The recipe the CLI ships for each model (batch 64), chosen to reach the project's targets on
#: the MNIST test set: mlp >= 98.2% in 10 epochs, seed_cnn >= 97.0% in 3, lenet >= 99.0% in 5.
MODEL_DEFAULTS = {
    "mlp": {"epochs": 10, "optimizer": "momentum", "lr": 0.05, "schedule": "cosine"},
    "seed_cnn": {"epochs": 3, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
    "lenet": {"epochs": 5, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
}


def build_model(config, backend=None):
    """The untrained model ``config`` describes (``backend`` overrides ``config.backend``)."""
    options = {"seed": config.seed, "backend": backend or config.backend}
    if config.model == "mlp":
        options.update(hidden=config.hidden, batchnorm=config.batchnorm, dropout=config.dropout)
    return MODELS[config.model](**options)


def build_optimizer(config, params):
    name, lr, decay = config.optimizer, config.lr, config.weight_decay
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=decay)
    if name == "adamw":
        return AdamW(params, lr=lr, weight_decay=decay)
    momentum = 0.0 if name == "sgd" else config.momentum
    return SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov", weight_decay=decay)


def build_schedule(config, optimizer):
    """StepLR, CosineAnnealingLR (over ``config.epochs``) or None."""
    if config.schedule == "step":
        return StepLR(optimizer, config.step_size, config.gamma)
    if config.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


def loader_seed(seed):
    """The seed of the training loader's Generator: derived from ``seed`` through a SeedSequence so
    that its stream is independent of the model's (which ``fastnn.models`` derives from ``seed`` too)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, np.uint64)[0])


def build_loaders(config, mnist=None):
    """``(train_loader, test_loader)`` over MNIST (or ``mnist``, a ``fastnn.data.MNIST``), sliced by
    ``config.limit`` / ``config.test_limit``; the training loader shuffles (and augments if asked)."""
    from .data import DataLoader, load_mnist

    mnist = mnist if mnist is not None else load_mnist(config.data_dir)
    train = DataLoader(mnist.train_images[:config.limit], mnist.train_labels[:config.limit], config.batch_size,
                       shuffle=True, seed=loader_seed(config.seed), augment=config.augment)
    test = DataLoader(mnist.test_images[:config.test_limit], mnist.test_labels[:config.test_limit], 1000)
    return train, test


def load_jit_kernels(model, optimizer, criterion, sample, log=print):
    """Compile (the first run on a machine) or load from Numba's disk cache the jit kernels this
    run uses, so that the first epoch's time and images/s are training alone; returns the seconds
    taken. Copies of ``model``, ``optimizer`` and ``criterion`` train one epoch over ``sample`` (a
    loader of a couple of images) and evaluate on it: the run's own weights, optimizer state,
    batch-norm statistics and random generators are left as they were. Logs a line before, and
    one after if it took long (a compile, once per machine)."""
    log("loading the jit kernels (the first run on a machine compiles and caches them, about half a minute)")
    start = time.perf_counter()
    model, optimizer, criterion = copy.deepcopy((model, optimizer, criterion))
    train_epoch(model, sample, criterion, optimizer, progress=False)
    evaluate(model, sample, criterion)
    seconds = time.perf_counter() - start
    if seconds > 2:
        log(f"jit kernels compiled in {seconds:.1f} s; later runs load them from the cache")
    return seconds


def run(config, out_dir, *, resume=None, progress=True, checkpoint_every=0, log=print, mnist=None):
    """Train the run ``config`` describes, with its files in ``out_dir``; returns the history.

    Writes ``config.json`` and then, each epoch, the checkpoints and metrics (see ``Trainer``),
    holding ``run_lock(out_dir)`` throughout. On the jit backend the kernels are loaded (or
    compiled) first, outside the epochs' timings (``load_jit_kernels``).
    ``resume``: a checkpoint (path or ``checkpoint.Checkpoint``, normally ``out_dir/last.npz``)
    to continue from; its stored configuration should be the ``config`` passed (see
    ``fastnn.cli``). ``mnist``: the data, if already loaded.
    """
    from .data import DataLoader, load_mnist

    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    schedule = build_schedule(config, optimizer)
    mnist = mnist if mnist is not None else load_mnist(config.data_dir)
    train_loader, test_loader = build_loaders(config, mnist)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(out_dir):
        trainer = Trainer(model, optimizer, train_loader, test_loader,
                          criterion=CrossEntropyLoss(backend=config.backend), schedule=schedule, out_dir=out_dir,
                          config=config.to_dict(), progress=progress, checkpoint_every=checkpoint_every, log=log)
        if resume is not None:
            trainer.resume(resume)
        else:
            ckpt.atomic_write(out_dir / "config.json",
                              lambda f: f.write(json.dumps(config.to_dict(), indent=1).encode()))
        if resolve(config.backend) == "jit":
            sample = DataLoader(mnist.train_images[:2], mnist.train_labels[:2], 2, augment=config.augment)
            load_jit_kernels(model, optimizer, trainer.criterion, sample, log)
        log(TABLE_HEADER)
        for record in trainer.history:
            log(format_epoch(record))
        if resume is not None:
            log(f"(resumed at epoch {trainer.epoch + 1}, step {trainer.step} of {len(train_loader)})")
        return trainer.fit(config.epochs)
