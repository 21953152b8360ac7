"""Checkpoints: a whole training state in one ``.npz`` file, written atomically, read strictly.

One file holds (keys of the npz archive):

- ``format`` / ``version``: the marker ``"fastnn-checkpoint"`` and the format version;
- ``model/<name>``: the model's ``state_dict`` (parameters and buffers, e.g. ``model/0.weight``);
- ``optimizer/<name>``, ``schedule/<name>``: their ``state_dict`` arrays (absent when there is none);
- ``config``: the run's configuration, a JSON string (it is enough to rebuild the model);
- ``progress``: a JSON string: the epoch (completed epochs), the step (batches done in the epoch
  under way), the running sums of that epoch, the best test accuracy and the per-epoch history;
- ``rng``: a JSON string of ``bit_generator.state`` dicts: ``"loader"`` (the training loader's
  Generator as it was at the start of the epoch under way) and ``"modules"`` (each module with its
  own ``.rng`` -- the Dropout layers -- by dotted name, as it is now).

Nothing is pickled: the archive is read with ``allow_pickle=False``. ``write`` goes through a
temporary file in the same directory (flushed and fsynced), ``os.replace`` and an fsync of the
directory, so a crash at any moment leaves either the old file or the new one. ``read`` checks
the marker, the version and every key before returning; ``restore`` checks that every array
fits the model, optimizer and schedule before it changes any of them.
"""
import json
import os
import pathlib
import re
import secrets
import zipfile
from dataclasses import dataclass

import numpy as np

FORMAT = "fastnn-checkpoint"
VERSION = 1

# Bit generators whose state is plain JSON (ints); numpy's default_rng uses PCG64.
_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM}


class CheckpointError(Exception):
    """A file that is not a readable fastnn checkpoint, or one that does not fit the model."""


@dataclass
class Checkpoint:
    """The validated contents of a checkpoint file (see the module docstring for each part)."""

    path: str
    model: dict
    optimizer: dict
    schedule: dict
    config: dict
    progress: dict
    rng: dict


def rng_states(model, loader_state=None):
    """The ``rng`` part of a checkpoint: ``{"loader": state or None, "modules": {name: state}}``.

    ``model``'s modules holding a ``numpy.random.Generator`` as ``.rng`` (Dropout) are found
    through ``named_modules``; ``loader_state`` is a ``bit_generator.state`` dict.
    """
    modules = {name: generator.bit_generator.state for name, generator in _generators(model).items()}
    for name, state in [("loader", loader_state), *modules.items()]:
        if state is not None and state["bit_generator"] not in _BIT_GENERATORS:
            raise ValueError(f"the random generator of {name!r} uses {state['bit_generator']}; checkpoints store "
                             f"only {', '.join(_BIT_GENERATORS)} generators")
    return {"loader": loader_state, "modules": modules}


def _generators(model):
    """``{dotted name: Generator}`` of the modules holding their own ``.rng`` (the Dropout layers)."""
    return {name: module.rng for name, module in model.named_modules()
            if isinstance(getattr(module, "rng", None), np.random.Generator)}


def write(path, model, optimizer=None, schedule=None, *, config=None, progress=None, rng=None):
    """Save a training state to ``path`` atomically (see the module docstring for the layout).

    ``config`` and ``progress`` are JSON-serialisable dicts; ``rng`` is as made by ``rng_states``
    (default: the model's generators, no loader state).
    """
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "config": np.array(json.dumps(config or {})),
              "progress": np.array(json.dumps(progress or {})),
              "rng": np.array(json.dumps(rng if rng is not None else rng_states(model)))}
    arrays.update((f"model/{k}", v) for k, v in model.state_dict().items())
    for part, owner in (("optimizer", optimizer), ("schedule", schedule)):
        if owner is not None:
            arrays.update((f"{part}/{k}", np.asarray(v)) for k, v in owner.state_dict().items())
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _temporary_name(path):
    """Name of the temporary file ``atomic_write`` writes before renaming it to ``path``."""
    return f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


_TEMPORARY = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.tmp")


def remove_partial_writes(directory):
    """Delete the temporary files an ``atomic_write`` killed mid-way (SIGKILL, power loss) left in
    ``directory``; returns their names. Only for a folder no other process is writing to (its
    run lock held): a live write's temporary file matches too."""
    removed = []
    for entry in pathlib.Path(directory).iterdir():
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)


def atomic_write(path, write_to):
    """Create or replace ``path`` with what ``write_to(binary file)`` writes, atomically.

    The data goes to a temporary file beside ``path`` which is flushed and fsynced, then renamed
    over ``path`` (``os.replace``), and the directory is fsynced so that the rename itself is
    durable. If anything fails the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, _temporary_name(path))
    try:
        with open(temporary, "xb") as f:
            write_to(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _json(arrays, key, path):
    array = arrays[key]
    if array.shape != () or array.dtype.kind != "U":
        raise CheckpointError(f"{path}: {key!r} must be a JSON string, "
                              f"got a {array.dtype} array of shape {array.shape}")
    try:
        value = json.loads(str(array))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: {key!r} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key!r} must hold a JSON object, got {type(value).__name__}")
    return value


def _check_rng_state(state, what, path):
    """Raise CheckpointError unless ``state`` is a valid ``bit_generator.state`` dict."""
    try:
        bit_generator = _BIT_GENERATORS[state["bit_generator"]]()
        bit_generator.state = state
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: the saved state of the random generator {what} is invalid "
                              f"({error!r})") from None


def read(path):
    """Read and validate the checkpoint at ``path``; returns a ``Checkpoint``.

    Raises CheckpointError naming the file when it is missing, truncated or corrupt (the zip
    checksums are verified as every array is read), not a fastnn checkpoint, of another format
    version, or missing a part.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {error}") from None
    if "format" not in arrays or arrays["format"].dtype.kind != "U" or str(arrays["format"]) != FORMAT:
        raise CheckpointError(f"{path}: not a fastnn checkpoint (no {FORMAT!r} marker)")
    version = arrays.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is not supported (expected {VERSION})")
    missing = [key for key in ("config", "progress", "rng") if key not in arrays]
    if missing or not any(key.startswith("model/") for key in arrays):
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing or ['model weights']}")
    parts = {"model": {}, "optimizer": {}, "schedule": {}}
    for key, array in arrays.items():
        part, _, name = key.partition("/")
        if part in parts and name:
            parts[part][name] = array
        elif key not in ("format", "version", "config", "progress", "rng"):
            raise CheckpointError(f"{path}: unexpected entry {key!r}")
    rng = _json(arrays, "rng", path)
    if not isinstance(rng.get("modules"), dict) or "loader" not in rng:
        raise CheckpointError(f"{path}: 'rng' must hold 'loader' and 'modules'")
    if rng["loader"] is not None:
        _check_rng_state(rng["loader"], "of the data loader", path)
    for name, state in rng["modules"].items():
        _check_rng_state(state, f"of module {name!r}", path)
    return Checkpoint(path=path, config=_json(arrays, "config", path), progress=_json(arrays, "progress", path),
                      rng=rng, **parts)


def _check_fits(stored, current, what, path):
    """Raise CheckpointError unless ``stored`` has exactly ``current``'s keys, shapes and dtypes."""
    missing = sorted(set(current) - set(stored))
    unexpected = sorted(set(stored) - set(current))
    if missing or unexpected:
        raise CheckpointError(f"{path}: the saved {what} state does not fit: "
                              f"missing {missing}, unexpected {unexpected}")
    for key, value in current.items():
        value = np.asarray(value)
        if stored[key].shape != value.shape or stored[key].dtype != value.dtype:
            raise CheckpointError(f"{path}: the saved {what} entry {key!r} is {stored[key].dtype}{stored[key].shape}, "
                                  f"expected {value.dtype}{value.shape}")


def restore(checkpoint, model, optimizer=None, schedule=None, loader=None):
    """Load a ``Checkpoint`` into the given objects: all of them, or (on CheckpointError) none.

    The saved model and schedule states are checked against the live objects' own
    ``state_dict`` (keys, shapes and dtypes), the saved random generators against the model's
    Dropout layers, and the optimizer state by the optimizer's (all-or-nothing)
    ``load_state_dict``, before anything else is changed. ``loader`` (optional): its Generator
    ``.rng`` is set to the saved loader state.
    """
    path = checkpoint.path
    owners = {"model": model, "schedule": schedule}
    for what, owner in owners.items():
        if owner is not None:
            _check_fits(getattr(checkpoint, what), owner.state_dict(), what, path)
    live = {f"module {name!r}": generator for name, generator in _generators(model).items()}
    saved = {f"module {name!r}": state for name, state in checkpoint.rng["modules"].items()}
    if set(live) != set(saved):
        raise CheckpointError(f"{path}: the saved random generators ({', '.join(sorted(saved)) or 'none'}) do not "
                              f"match the model's ({', '.join(sorted(live)) or 'none'})")
    if loader is not None:
        if checkpoint.rng["loader"] is None:
            raise CheckpointError(f"{path}: no saved data loader state to resume from")
        live["the data loader"], saved["the data loader"] = loader.rng, checkpoint.rng["loader"]
    for name, generator in live.items():
        if saved[name]["bit_generator"] != type(generator.bit_generator).__name__:
            raise CheckpointError(f"{path}: the saved generator of {name} is a {saved[name]['bit_generator']}, "
                                  f"the live one a {type(generator.bit_generator).__name__}")
    if optimizer is not None:
        # An optimizer's state grows at its first step, so it is checked by its own
        # load_state_dict, which validates every entry before changing anything; it goes first
        # so that nothing else has been changed when it refuses.
        try:
            optimizer.load_state_dict(checkpoint.optimizer)
        except ValueError as error:
            raise CheckpointError(f"{path}: the saved optimizer state does not fit: {error}") from None
    for what, owner in owners.items():
        if owner is not None:
            owner.load_state_dict(getattr(checkpoint, what))
    for name, generator in live.items():
        generator.bit_generator.state = saved[name]


def load_model(path, backend=None):
    """Rebuild the model saved at ``path`` from its stored configuration and load its weights.

    ``backend`` overrides the backend named in the configuration. Returns ``(model, config)``
    with the model in eval mode; raises CheckpointError for a bad file.
    """
    from .train import Config, build_model

    checkpoint = read(path)
    try:
        config = Config.from_dict(checkpoint.config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.path}: the stored run configuration is invalid ({error})") from None
    model = build_model(config, backend=backend)
    restore(checkpoint, model)
    return model.eval(), checkpoint.config
