"""The ``fastnn`` command line: train (files, table, defaults, resume rules), evaluate, plot, and
scripts/train_mnist.py."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn import checkpoint as ckpt
from fastnn.cli import main
from fastnn.train import HISTORY_FIELDS, MODEL_DEFAULTS, Config

REPO = Path(__file__).resolve().parent.parent
TINY = ["--backend", "vectorized", "--limit", "512", "--test-limit", "200", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A two-epoch mlp run, trained once for the tests that only read it."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--model", "mlp", "--hidden", "32", "--epochs", "2", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_config_metrics_and_checkpoints(finished_run):
    assert sorted(p.name for p in finished_run.iterdir()) == ["best.npz", "config.json", "last.npz", "metrics.csv",
                                                              "metrics.json"]
    config = json.loads((finished_run / "config.json").read_text())
    assert Config.from_dict(config) == Config.for_model("mlp", hidden=(32,), epochs=2, backend="vectorized",
                                                         limit=512, test_limit=200)
    history = json.loads((finished_run / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all(tuple(r) == HISTORY_FIELDS for r in history)
    csv_lines = (finished_run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(HISTORY_FIELDS) and len(csv_lines) == 3
    assert ckpt.read(finished_run / "last.npz").config == config


def test_train_prints_a_table_line_per_epoch(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--model", "mlp", "--hidden", "16", "--epochs", "2", "--out", str(out), *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["epoch", "train", "loss"])
    rows = [line.split() for line in lines[header + 1: header + 3]]
    history = json.loads((out / "metrics.json").read_text())
    for row, record in zip(rows, history):
        assert int(row[0]) == record["epoch"]
        assert float(row[1]) == pytest.approx(record["train_loss"], abs=1e-4)
        assert row[4] == f"{record['test_accuracy']:.2%}"
    assert lines[-1].startswith("done: test accuracy")


def test_options_left_out_take_the_models_recipe(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--model", "seed_cnn", "--epochs", "1", "--lr", "0.003", "--out", str(out), *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.003 and config["epochs"] == 1
    assert (config["optimizer"], config["schedule"]) == (MODEL_DEFAULTS["seed_cnn"]["optimizer"],
                                                         MODEL_DEFAULTS["seed_cnn"]["schedule"])
    assert config["batch_size"] == 64 and config["seed"] == 0


@pytest.mark.parametrize("arguments, message", [
    (["--model", "lenet", "--hidden", "32"], "hidden"),
    (["--model", "mlp", "--dropout", "1.5"], "dropout"),
    (["--epochs", "1"], "--model is required"),
    (["--resume", "nowhere", "--model", "mlp"], "leave out --model"),
])
def test_bad_train_options_are_reported(tmp_path, capsys, arguments, message):
    assert main(["train", *arguments, "--out", str(tmp_path / "r")] if "--resume" not in arguments
                else ["train", *arguments]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_refuses_to_change_the_stored_configuration(finished_run, capsys):
    assert main(["train", "--resume", str(finished_run), "--lr", "0.5"]) == 1
    assert "cannot change --lr when resuming" in capsys.readouterr().err


def test_resume_of_a_folder_without_checkpoint_names_the_file(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert str(tmp_path / "last.npz") in capsys.readouterr().err


def test_resume_continues_with_the_stored_configuration(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--model", "mlp", "--hidden", "16", "--epochs", "1", "--schedule", "none",
                 "--out", str(out), *TINY]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert "(resumed at epoch 2, step 0 of 8)" in capsys.readouterr().out
    history = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    stored = ckpt.read(out / "last.npz")
    assert stored.config["hidden"] == [16] and stored.config["epochs"] == 3 and stored.progress["epoch"] == 3


@pytest.mark.parametrize("schedule, warned", [("cosine", True), ("none", False)])
def test_extending_a_cosine_run_on_resume_says_what_happens_to_the_learning_rate(tmp_path, capsys, schedule,
                                                                                   warned):
    out = tmp_path / "r"
    assert main(["train", "--model", "mlp", "--hidden", "16", "--epochs", "1", "--schedule", schedule,
                 "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert ("planned over 1 epochs" in err and "rises again" in err) == warned
    if schedule == "cosine":  # the stored plan is kept: epoch 2 runs at the bottom of the cosine
        assert json.loads((out / "metrics.json").read_text())[1]["lr"] == pytest.approx(0.0)


@pytest.mark.parametrize("backend, loaded", [("jit", True), ("vectorized", False)])
def test_jit_kernels_are_loaded_before_the_first_epoch(tmp_path, capsys, monkeypatch, backend, loaded):
    """So that epoch 1's time is training alone, not Numba compiling."""
    from fastnn import train

    calls = []
    monkeypatch.setattr(train, "load_jit_kernels", lambda *args: calls.append(capsys.readouterr().out))
    options = [arg for arg in TINY if arg not in ("--backend", "vectorized")]
    assert main(["train", "--model", "mlp", "--hidden", "16", "--epochs", "1", "--backend", backend,
                 "--out", str(tmp_path / "r"), *options]) == 0
    assert len(calls) == int(loaded)
    if loaded:  # before the table and any epoch line
        assert "training mlp" in calls[0] and "train loss" not in calls[0]


def test_evaluate_prints_accuracy_per_class_and_confusion_matrix(finished_run, capsys):
    assert main(["evaluate", str(finished_run / "best.npz")]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "confusion matrix" in out
    assert sum(line.split()[:1] in (["0"], ["9"]) for line in out.splitlines()) >= 4  # class rows, matrix rows


def test_evaluate_a_bad_checkpoint_names_it(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("nonsense")
    assert main(["evaluate", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_plot_writes_pictures_into_the_run_folder(finished_run, capsys):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(finished_run)]) == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert {p.name for p in written} >= {"loss.png", "accuracy.png", "confusion_matrix.png"}
    assert all(p.parent == finished_run and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_script_train_mnist_runs_the_same_command(tmp_path):
    out = tmp_path / "r"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train_mnist.py"), "--model", "mlp", "--hidden",
                             "16", "--epochs", "1", "--out", str(out), *TINY], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["hidden"] == [16]
    assert len(json.loads((out / "metrics.json").read_text())) == 1
