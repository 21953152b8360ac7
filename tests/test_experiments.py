"""The experiment scripts (scripts/regression_sin.py, train_image_folder.py, sweep_mlp.py) on small inputs."""
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


def load_script(name):
    """The script scripts/<name>.py as a module (its main() is not run)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_pngs(paths):
    for path in paths:
        if path.suffix == ".png":
            assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 1000, path


def test_regression_fits_the_sine_well_below_its_variance(tmp_path, capsys):
    result = load_script("regression_sin").main(["--steps", "400", "--out", str(tmp_path)])
    # Predicting 0 everywhere gives 0.5, the variance of sin(2 pi x) over [0, 1].
    assert result["test_mse"] < 0.05
    rows = read_csv(tmp_path / "results.csv")
    assert [int(r["step"]) for r in rows] == list(range(40, 401, 40))
    assert float(rows[0]["test_mse"]) > 2 * float(rows[-1]["test_mse"])  # it learned along the way
    assert_pngs(result["paths"])
    assert "final test MSE" in capsys.readouterr().out


def write_shapes_folder(root, per_class=30, seed=0):
    """Three classes of noisy 20x20 pictures: a horizontal bar, a vertical bar, a cross; PNG and BMP."""
    rng = np.random.default_rng(seed)
    for name in ("horizontal", "vertical", "cross"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 70, (20, 20)).astype(np.uint8)
            k = rng.integers(6, 12)  # where the bar lies
            if name == "horizontal":
                image[k:k + 3, 2:18] = 255
            elif name == "vertical":
                image[2:18, k:k + 3] = 255
            else:
                image[np.arange(2, 18), np.arange(2, 18)] = 255
                image[np.arange(2, 18), np.arange(17, 1, -1)] = 255
            PIL.fromarray(image).save(root / name / f"{i:03d}.{'png' if i % 2 else 'bmp'}")


def test_image_folder_training_tells_the_classes_apart(tmp_path, capsys):
    write_shapes_folder(tmp_path / "shapes")
    arguments = [str(tmp_path / "shapes"), "--size", "16", "--epochs", "8", "--hidden", "64"]
    result = load_script("train_image_folder").main([*arguments, "--out", str(tmp_path / "out")])
    assert result["class_names"] == ["cross", "horizontal", "vertical"]
    assert result["test_accuracy"] >= 0.9  # chance is 1/3
    history = read_csv(tmp_path / "out" / "history.csv")
    assert len(history) == 8 and float(history[-1]["test_accuracy"]) == pytest.approx(result["test_accuracy"])
    assert_pngs(result["paths"])
    assert "test accuracy" in capsys.readouterr().out


def test_image_folder_split_keeps_every_class_on_both_sides():
    split_per_class = load_script("train_image_folder").split_per_class
    labels = np.repeat([0, 1, 2], [10, 5, 20])
    train, test = split_per_class(labels, 0.2, np.random.default_rng(0))
    assert np.bincount(labels[test]).tolist() == [2, 1, 4]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(35))


def test_sweep_runs_every_factor_around_one_baseline(tmp_path, mnist_dir, capsys):
    sweep = load_script("sweep_mlp")
    result = sweep.main(["--epochs", "1", "--limit", "128", "--data-dir", str(mnist_dir), "--out", str(tmp_path)])
    rows = read_csv(tmp_path / "results.csv")
    expected = [(factor, str(value)) for factor, values in sweep.FACTORS.items() for value, _ in values]
    assert [(r["factor"], r["value"]) for r in rows] == expected
    depth5 = next(r for r in rows if (r["factor"], r["value"]) == ("depth", "5"))
    assert depth5["hidden"] == "512x512x512x512x512"
    adam = next(r for r in rows if (r["factor"], r["value"]) == ("optimizer", "adam"))
    assert (adam["optimizer"], float(adam["lr"])) == ("adam", 1e-3)
    # The baseline is trained once and appears, identical, in every factor's rows.
    baseline = [r for r in rows if (r["hidden"], r["optimizer"], r["lr"], r["batch_size"], r["dropout"])
                == ("512", "momentum", "0.05", "64", "0.0")]
    assert len(baseline) == len(sweep.FACTORS)
    assert [r for r in rows if r["baseline"] == "True"] == baseline
    assert len({(r["test_accuracy"], r["seconds"]) for r in baseline}) == 1
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert_pngs(result["paths"])
    assert capsys.readouterr().out.count("| depth |") == 4  # the Markdown table


def test_sweep_rejects_an_unknown_factor():
    with pytest.raises(SystemExit):
        load_script("sweep_mlp").parse_args(["--factors", "depth,colour"])
