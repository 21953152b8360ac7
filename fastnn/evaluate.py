"""Evaluate a trained classifier: predictions, confusion matrix, per-class accuracy; result tables.

``fastnn evaluate CHECKPOINT`` calls ``evaluate_checkpoint`` and prints ``format_report``.
The confusion matrix follows the usual convention: row = true class, column = predicted class.
``markdown_table`` and ``write_csv`` give the experiment scripts' results tables.
"""
import csv

import numpy as np


def predict(model, loader):
    """Predicted class of every example a loader yields, in the loader's order.

    ``loader`` yields ``(x, y)`` batches (``fastnn.data.DataLoader``: x (B,1,H,W), y (B,)); the
    labels are ignored. The model runs in eval mode (dropout off, batch-norm running statistics)
    and is put back in the mode it was in. Returns predictions (N,) int64.
    """
    was_training = model.training
    model.eval()
    try:
        batches = [np.argmax(model(x), axis=1) for x, _ in loader]
    finally:
        model.train(was_training)
    if not batches:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(batches).astype(np.int64)


def confusion_matrix(labels, predictions, num_classes=10):
    """Counts (K, K) int64: entry [i, j] = number of examples of true class i predicted as j."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.ndim != 1 or labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions must be 1-D of one length, got labels {labels.shape}, "
                         f"predictions {predictions.shape}")
    for name, a in (("labels", labels), ("predictions", predictions)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{a.min()}, {a.max()}]")
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm):
    """Fraction of each true class predicted correctly, (K,) float64; NaN for a class with no examples."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {cm.shape}")
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / totals


def evaluate_checkpoint(path, data_dir=None, backend=None, batch_size=1000, *, mnist=None):
    """Accuracy of a saved model on the 10,000 MNIST test images.

    ``data_dir`` None: the run's own data directory (from its stored configuration), then
    ``load_mnist``'s search order. ``backend`` None: the backend the run used. ``mnist``: the
    data (a ``fastnn.data.MNIST``), if already loaded.

    Returns a dict: ``checkpoint`` (str), ``model`` (its name in the run config, or None),
    ``num_examples``, ``accuracy`` (float), ``per_class_accuracy`` (10,), ``confusion_matrix``
    (10, 10) int64, and ``labels``, ``predictions`` (10000,) int64 for further use (plots).
    """
    from .checkpoint import load_model
    from .data import DataLoader, load_mnist

    model, config = load_model(path, backend=backend)
    if mnist is None:
        mnist = load_mnist(data_dir if data_dir is not None else config.get("data_dir"))
    labels = mnist.test_labels.astype(np.int64)
    predictions = predict(model, DataLoader(mnist.test_images, labels, batch_size=batch_size))
    cm = confusion_matrix(labels, predictions, num_classes=10)
    return {
        "checkpoint": str(path),
        "model": config.get("model"),
        "num_examples": int(labels.size),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "per_class_accuracy": per_class_accuracy(cm),
        "confusion_matrix": cm,
        "labels": labels,
        "predictions": predictions,
    }


def format_report(result):
    """Plain-text report of an ``evaluate_checkpoint`` result: accuracy, per-class table, matrix."""
    cm = result["confusion_matrix"]
    k = cm.shape[0]
    correct = int(np.trace(cm))
    model = f"  (model {result['model']})" if result.get("model") else ""
    lines = [f"checkpoint: {result['checkpoint']}{model}",
             f"accuracy:   {result['accuracy']:.2%}  ({correct}/{int(cm.sum())} test images)",
             "",
             "class  examples  accuracy"]
    for c in range(k):
        lines.append(f"{c:>5}  {int(cm[c].sum()):>8}  {result['per_class_accuracy'][c]:>8.2%}")
    width = max(5, len(str(int(cm.max()))) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              "true\\pred" + "".join(f"{c:>{width}}" for c in range(k))]
    for c in range(k):
        lines.append(f"{c:>9}" + "".join(f"{n:>{width}}" for n in cm[c]))
    return "\n".join(lines)


def _cell(value):
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)


def markdown_table(rows):
    """A Markdown table of result rows (dicts sharing the first row's keys), floats to 4 digits."""
    if not rows:
        raise ValueError("rows is empty")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(rows, path):
    """Write result rows (dicts sharing the first row's keys) to a CSV file; returns the path."""
    if not rows:
        raise ValueError("rows is empty")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
