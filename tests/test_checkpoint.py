"""Checkpoint files: what they hold, atomic writing, strict reading, all-or-nothing restoring."""
import json
import os

import numpy as np
import pytest

from fastnn import checkpoint as ckpt
from fastnn.losses import CrossEntropyLoss
from fastnn.train import Config, build_model, build_optimizer, build_schedule


def make_run(seed=0, hidden=(16,), optimizer="momentum", steps=2):
    """A small mlp with dropout, its optimizer and cosine schedule, after ``steps`` training steps
    on random data (so that the optimizer has state and the Generators have moved)."""
    config = Config(model="mlp", hidden=hidden, dropout=0.5, backend="vectorized", optimizer=optimizer,
                    lr=0.1, schedule="cosine", epochs=4, seed=seed)
    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    schedule = build_schedule(config, optimizer)
    data = np.random.default_rng(seed)
    for _ in range(steps):
        x = data.standard_normal((8, 1, 28, 28)).astype(np.float32)
        y = data.integers(0, 10, 8)
        train_step(model, optimizer, x, y)
        schedule.step()
    return config, model, optimizer, schedule


def train_step(model, optimizer, x, y):
    """One step; returns the output (whose values depend on the weights and the dropout masks)."""
    model.train()
    output = model(x)
    loss = CrossEntropyLoss()(output, y)
    optimizer.zero_grad()
    model.backward(loss.backward())
    optimizer.step()
    return output


def write_run(path, config, model, optimizer, schedule, loader_state=None):
    progress = {"epoch": 1, "step": 2}
    ckpt.write(path, model, optimizer, schedule, config=config.to_dict(), progress=progress,
               rng=ckpt.rng_states(model, loader_state))


def snapshot(model, optimizer, schedule):
    return (model.state_dict(), optimizer.state_dict(), schedule.state_dict(),
            [m.rng.bit_generator.state for _, m in model.named_modules() if hasattr(m, "rng")])


def assert_same_snapshot(a, b):
    for part_a, part_b in zip(a[:3], b[:3]):
        assert part_a.keys() == part_b.keys()
        for key in part_a:
            np.testing.assert_array_equal(part_a[key], part_b[key], err_msg=key)
    assert a[3] == b[3]


def test_round_trip_restores_weights_optimizer_schedule_and_generators(tmp_path):
    config, model, optimizer, schedule = make_run(seed=0)
    loader_rng = np.random.default_rng(5)
    loader_rng.random(3)
    path = tmp_path / "last.npz"
    write_run(path, config, model, optimizer, schedule, loader_rng.bit_generator.state)

    _, model2, optimizer2, schedule2 = make_run(seed=1, steps=1)  # different weights and state
    loader = type("Loader", (), {"rng": np.random.default_rng(0)})()
    checkpoint = ckpt.read(path)
    ckpt.restore(checkpoint, model2, optimizer2, schedule2, loader)

    assert_same_snapshot(snapshot(model, optimizer, schedule), snapshot(model2, optimizer2, schedule2))
    assert loader.rng.bit_generator.state == loader_rng.bit_generator.state
    assert checkpoint.config == config.to_dict() and checkpoint.progress == {"epoch": 1, "step": 2}
    assert optimizer2.lr == optimizer.lr != 0.1  # the scheduled lr comes back with the optimizer
    # The restored run continues exactly as the original: same dropout masks, same updates.
    x = np.random.default_rng(9).standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10
    np.testing.assert_array_equal(train_step(model, optimizer, x, y), train_step(model2, optimizer2, x, y))
    assert_same_snapshot(snapshot(model, optimizer, schedule), snapshot(model2, optimizer2, schedule2))


def test_file_is_a_plain_npz_with_marker_and_no_pickled_objects(tmp_path):
    config, model, optimizer, schedule = make_run()
    path = tmp_path / "c.npz"
    write_run(path, config, model, optimizer, schedule)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    assert str(arrays["format"]) == "fastnn-checkpoint" and int(arrays["version"]) == ckpt.VERSION
    assert all(a.dtype != object for a in arrays.values())
    assert json.loads(str(arrays["config"]))["hidden"] == [16]
    np.testing.assert_array_equal(arrays["model/1.weight"], model.state_dict()["1.weight"])


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    config, model, optimizer, schedule = make_run()
    path = tmp_path / "last.npz"
    write_run(path, config, model, optimizer, schedule)
    before = path.read_bytes()

    def crash_halfway(f):
        f.write(before[: len(before) // 2])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write(path, crash_halfway)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.npz"]
    ckpt.read(path)


def test_write_fsyncs_the_file_then_renames_it_then_fsyncs_the_directory(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b)))
    path = tmp_path / "x.bin"
    ckpt.atomic_write(path, lambda f: f.write(b"hello"))
    assert path.read_bytes() == b"hello"
    (_, synced), (_, source, target), (_, directory) = events
    assert os.path.dirname(synced) == str(tmp_path) and synced == source and synced != str(path)
    assert target == str(path) and directory == str(tmp_path)


def _truncate(data):
    return data[: len(data) // 2]


def _flip_middle_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _foreign_npz(path):
    np.savez(path, weights=np.ones(3))


def _rewrite(path, change):
    """Rewrite the npz at ``path`` with ``change(arrays)`` applied (keeping the format otherwise)."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    change(arrays)
    np.savez(path, **arrays)


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(_truncate(p.read_bytes())),
    "empty": lambda p: p.write_bytes(b""),
    "flipped byte": lambda p: p.write_bytes(_flip_middle_byte(p.read_bytes())),
    "text file": lambda p: p.write_text("not a checkpoint\n"),
    "foreign npz": _foreign_npz,
    "wrong marker": lambda p: _rewrite(p, lambda a: a.update(format=np.array("something-else"))),
    "future version": lambda p: _rewrite(p, lambda a: a.update(version=np.array(ckpt.VERSION + 1))),
    "missing rng": lambda p: _rewrite(p, lambda a: a.pop("rng")),
    "bad json": lambda p: _rewrite(p, lambda a: a.update(config=np.array("{not json"))),
    "bad generator state": lambda p: _rewrite(p, lambda a: a.update(
        rng=np.array(json.dumps({"loader": {"bit_generator": "PCG64", "state": 3}, "modules": {}})))),
    "pickled object": lambda p: _rewrite(p, lambda a: a.update(config=np.array([{"evil": 1}], dtype=object))),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_bad_file_raises_checkpoint_error_naming_it_and_changes_nothing(tmp_path, corruption):
    config, model, optimizer, schedule = make_run(seed=0)
    path = tmp_path / "last.npz"
    write_run(path, config, model, optimizer, schedule)
    CORRUPTIONS[corruption](path)
    _, model2, optimizer2, schedule2 = make_run(seed=1)
    before = snapshot(model2, optimizer2, schedule2)
    with pytest.raises(ckpt.CheckpointError, match=str(path)):
        ckpt.restore(ckpt.read(path), model2, optimizer2, schedule2)
    assert_same_snapshot(before, snapshot(model2, optimizer2, schedule2))


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.read(tmp_path / "nothing.npz")


def test_checkpoint_of_another_architecture_is_refused_and_changes_nothing(tmp_path):
    config, model, optimizer, schedule = make_run(hidden=(16,))
    path = tmp_path / "c.npz"
    write_run(path, config, model, optimizer, schedule)
    _, model2, optimizer2, schedule2 = make_run(hidden=(32,))
    before = snapshot(model2, optimizer2, schedule2)
    with pytest.raises(ckpt.CheckpointError, match=r"'1\.weight'"):
        ckpt.restore(ckpt.read(path), model2, optimizer2, schedule2)
    assert_same_snapshot(before, snapshot(model2, optimizer2, schedule2))


def test_optimizer_that_does_not_fit_is_refused_before_the_model_changes(tmp_path):
    """The weights fit but the optimizer state (momentum SGD saved, Adam live) does not: no half-load."""
    config, model, optimizer, schedule = make_run(optimizer="momentum")
    path = tmp_path / "c.npz"
    write_run(path, config, model, optimizer, schedule)
    _, model2, optimizer2, schedule2 = make_run(seed=1, optimizer="adam")
    before = snapshot(model2, optimizer2, schedule2)
    with pytest.raises(ckpt.CheckpointError, match="optimizer"):
        ckpt.restore(ckpt.read(path), model2, optimizer2, schedule2)
    assert_same_snapshot(before, snapshot(model2, optimizer2, schedule2))


def test_load_model_rebuilds_the_model_from_the_stored_config(tmp_path):
    config, model, optimizer, schedule = make_run()
    path = tmp_path / "c.npz"
    write_run(path, config, model, optimizer, schedule)
    loaded, stored = ckpt.load_model(path)
    assert stored == config.to_dict()
    assert not loaded.training  # ready for inference: dropout off
    x = np.random.default_rng(3).standard_normal((5, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model.eval()(x))
    on_reference, _ = ckpt.load_model(path, backend="reference")
    assert {m.backend for _, m in on_reference.named_modules() if hasattr(m, "backend")} == {"reference"}
    np.testing.assert_allclose(on_reference(x), loaded(x), rtol=1e-4, atol=1e-5)


def test_load_model_with_an_invalid_config_raises_checkpoint_error(tmp_path):
    config, model, optimizer, schedule = make_run()
    path = tmp_path / "c.npz"
    write_run(path, config, model, optimizer, schedule)
    _rewrite(path, lambda a: a.update(config=np.array(json.dumps({**config.to_dict(), "model": "resnet"}))))
    with pytest.raises(ckpt.CheckpointError, match="configuration"):
        ckpt.load_model(path)



def test_model_with_other_dropout_layers_is_refused_and_changes_nothing(tmp_path):
    """Same weights, but the saved run had a Dropout generator that the live model lacks."""
    config, model, optimizer, schedule = make_run()
    path = tmp_path / "c.npz"
    write_run(path, config, model, optimizer, schedule)
    checkpoint = ckpt.read(path)
    checkpoint.rng["modules"]["7"] = checkpoint.rng["modules"]["3"]
    _, model2, optimizer2, schedule2 = make_run(seed=1)
    before = snapshot(model2, optimizer2, schedule2)
    with pytest.raises(ckpt.CheckpointError, match="random generators"):
        ckpt.restore(checkpoint, model2, optimizer2, schedule2)
    assert_same_snapshot(before, snapshot(model2, optimizer2, schedule2))


def test_generators_other_than_pcg64_are_refused_when_saving(tmp_path):
    config, model, optimizer, schedule = make_run()
    model[3].rng = np.random.Generator(np.random.MT19937(0))
    with pytest.raises(ValueError, match="MT19937"):
        write_run(tmp_path / "c.npz", config, model, optimizer, schedule)
