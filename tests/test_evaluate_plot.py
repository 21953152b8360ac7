"""fastnn.evaluate (predictions, confusion matrix, checkpoint evaluation) and fastnn.plot (PNG files)."""
import csv
import json
import sys

import numpy as np
import pytest

from fastnn import checkpoint, nn
from fastnn.data import DataLoader
from fastnn.evaluate import (confusion_matrix, evaluate_checkpoint, format_report, markdown_table,
                             per_class_accuracy, predict, write_csv)
from fastnn.train import Config, build_model

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")
from fastnn import plot  # noqa: E402  (after the skip: plotting needs matplotlib)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Examples per class in the MNIST test set (as published with the data set).
MNIST_TEST_COUNTS = np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def assert_png(path, min_side=100):
    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE, path
    with PIL.open(path) as image:
        assert min(image.size) >= min_side, (path, image.size)


# -- confusion matrix and accuracy ---------------------------------------------------------------

def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    labels = [0, 0, 1, 2, 2, 2]
    predictions = [0, 1, 1, 2, 0, 2]
    expected = np.array([[1, 1, 0],   # the two 0s: one right, one taken for a 1
                         [0, 1, 0],   # the 1: right
                         [1, 0, 2]])  # the three 2s: one taken for a 0, two right
    cm = confusion_matrix(labels, predictions, num_classes=3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_has_room_for_classes_never_seen():
    cm = confusion_matrix(np.array([1, 1]), np.array([1, 1]), num_classes=4)
    assert cm.shape == (4, 4) and cm[1, 1] == 2 and cm.sum() == 2


@pytest.mark.parametrize("labels, predictions, match", [
    ([0, 1, 2], [0, 1], "same length|one length"),
    ([[0, 1]], [[0, 1]], "1-D"),
    ([0, 10], [0, 1], r"labels must lie in \[0, 10\)"),
    ([0, 1], [0, -1], r"predictions must lie in \[0, 10\)"),
    ([0.0, 1.0], [0, 1], "labels must be integers"),
])
def test_confusion_matrix_rejects_bad_input(labels, predictions, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(np.array(labels), np.array(predictions), num_classes=10)


def test_per_class_accuracy_is_diagonal_over_row_sums_and_nan_for_absent_classes():
    cm = np.array([[1, 1, 0],
                   [0, 0, 0],
                   [1, 0, 2]])
    accuracy = per_class_accuracy(cm)
    np.testing.assert_allclose(accuracy[[0, 2]], [1 / 2, 2 / 3])
    assert np.isnan(accuracy[1])
    with pytest.raises(ValueError, match="square"):
        per_class_accuracy(np.zeros((2, 3)))


def pixel_argmax_model():
    """Flatten, then a Linear(3, 3) with identity weight: the predicted class is the brightest pixel."""
    linear = nn.Linear(3, 3, backend="vectorized")
    linear.weight.data = np.eye(3, dtype=np.float32)
    return nn.Sequential(nn.Flatten(), linear)


def test_predict_returns_each_images_argmax_in_loader_order_and_keeps_the_mode():
    rng = np.random.default_rng(0)
    images = np.stack([rng.permutation(np.array([10, 100, 200], np.uint8)) for _ in range(50)])[:, None, :]
    model = pixel_argmax_model()  # in training mode, as built
    predictions = predict(model, DataLoader(images, np.zeros(50, np.int64), batch_size=8))
    assert predictions.dtype == np.int64
    np.testing.assert_array_equal(predictions, images[:, 0, :].argmax(axis=1))
    assert model.training


# -- checkpoints ---------------------------------------------------------------------------------

@pytest.fixture
def always_three(tmp_path):
    """A checkpoint of an mlp whose output layer answers class 3 for every image."""
    config = Config(model="mlp", hidden=(4,), backend="vectorized")
    model = build_model(config)
    model[-1].weight.data[:] = 0
    model[-1].bias.data[:] = 0
    model[-1].bias.data[3] = 1
    path = tmp_path / "best.npz"
    checkpoint.write(path, model, config=config.to_dict())
    return path


def test_evaluate_checkpoint_on_the_mnist_test_set(always_three, mnist_dir):
    result = evaluate_checkpoint(always_three, data_dir=mnist_dir)
    assert result["num_examples"] == 10000
    assert result["accuracy"] == pytest.approx(MNIST_TEST_COUNTS[3] / 10000)
    expected = np.zeros((10, 10), np.int64)
    expected[:, 3] = MNIST_TEST_COUNTS  # every image of every class predicted as 3
    np.testing.assert_array_equal(result["confusion_matrix"], expected)
    np.testing.assert_array_equal(result["per_class_accuracy"], np.eye(10)[3])
    assert result["model"] == "mlp"

    report = format_report(result)
    assert "10.10%" in report and "1010/10000" in report
    assert report.count("\n") > 20  # the per-class table and the 10 rows of the matrix


# -- result tables -------------------------------------------------------------------------------

def test_markdown_table_and_csv_hold_every_row(tmp_path):
    rows = [{"factor": "lr", "value": 0.05, "test_accuracy": 0.97123}, {"factor": "lr", "value": 0.2,
                                                                        "test_accuracy": 0.5}]
    table = markdown_table(rows).splitlines()
    assert table[0] == "| factor | value | test_accuracy |" and len(table) == 4
    assert table[2] == "| lr | 0.05 | 0.9712 |"
    with open(write_csv(rows, tmp_path / "r.csv")) as f:
        read = list(csv.DictReader(f))
    assert [float(r["value"]) for r in read] == [0.05, 0.2]
    with pytest.raises(ValueError, match="empty"):
        markdown_table([])


# -- pictures ------------------------------------------------------------------------------------

def red_pixels(path):
    """Number of strongly red pixels in a PNG (the colour of wrong predictions)."""
    with PIL.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int(np.count_nonzero((rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)))


def test_prediction_grid_marks_wrong_predictions_in_red(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    labels = np.arange(12) % 10
    right = plot.plot_predictions(images, labels, labels, tmp_path / "right.png")
    wrong_predictions = labels.copy()
    wrong_predictions[5] = (labels[5] + 1) % 10
    wrong = plot.plot_predictions(images, labels, wrong_predictions, tmp_path / "wrong.png")
    assert_png(right)
    assert red_pixels(right) == 0
    assert red_pixels(wrong) > 1000  # a red frame around the image (its red label alone makes ~80)
    rgb = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)  # (N, C, H, W) colour images
    assert_png(plot.plot_predictions(rgb, [0, 1, 1], [0, 1, 0], tmp_path / "rgb.png", class_names=["a", "b"]))
    with pytest.raises(ValueError, match="images must be"):
        plot.plot_predictions(images[:, None, None], labels, labels, tmp_path / "bad.png")


def write_history(run_dir, epochs=3):
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 1 - 0.2 / e, "test_loss": 1.1 / e,
                "test_accuracy": 1 - 0.25 / e, "seconds": 2.0, "images_per_sec": 30000.0, "lr": 0.05}
               for e in range(1, epochs + 1)]
    (run_dir / "metrics.json").write_text(json.dumps(history))


def test_plot_run_writes_curves_predictions_and_confusion_matrix(tmp_path, always_three, mnist_dir):
    write_history(tmp_path)  # the run dir holds best.npz (the fixture) and metrics.json
    paths = plot.plot_run(tmp_path, data_dir=mnist_dir)
    names = [p.name for p in paths]
    assert names == ["loss.png", "accuracy.png", "predictions.png", "mistakes.png", "confusion_matrix.png"]
    for path in paths:
        assert path.parent == tmp_path
        assert_png(path)
    assert red_pixels(tmp_path / "mistakes.png") > red_pixels(tmp_path / "predictions.png") > 0


def test_plot_run_without_a_checkpoint_draws_the_curves_only(tmp_path):
    write_history(tmp_path)
    assert [p.name for p in plot.plot_run(tmp_path)] == ["loss.png", "accuracy.png"]


def test_plot_run_needs_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        plot.plot_run(tmp_path)
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(ValueError, match="non-empty list"):
        plot.plot_run(tmp_path)


def test_plot_comparison_draws_one_panel_per_group(tmp_path):
    rows = [{"factor": f, "value": v, "acc": a} for f, v, a in
            [("depth", 1, 97.9), ("depth", 2, 98.1), ("optimizer", "sgd", 96.5), ("optimizer", "adam", 97.7)]]
    path = plot.plot_comparison(rows, "value", "acc", tmp_path / "c.png", group="factor", title="t")
    assert_png(path)
    with PIL.open(path) as image:
        assert image.size[0] > 1.5 * image.size[1]  # two panels side by side
    with pytest.raises(ValueError, match="empty"):
        plot.plot_comparison([], "value", "acc", tmp_path / "e.png")


def test_plots_without_matplotlib_name_the_extra(tmp_path, monkeypatch):
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    with pytest.raises(ImportError, match=r"fastnn\[plot\]"):
        plot.plot_curves([{"epoch": 1, "train_loss": 1.0}], "loss", tmp_path / "x.png")
