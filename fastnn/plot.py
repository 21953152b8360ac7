"""Pictures of training runs and experiments, written as PNG files.

Needs matplotlib, the optional extra ``fastnn[plot]``; it is imported only when a picture is
drawn. Figures are drawn with the Agg canvas directly (no pyplot, no window, no global state).

``fastnn plot RUN_DIR`` calls ``plot_run``.
"""
import json
from pathlib import Path

import numpy as np

DPI = 100


def _figure(width, height):
    """A new matplotlib Figure of ``width`` x ``height`` inches on an Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("fastnn's plots need matplotlib: pip install 'fastnn[plot]'") from error
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path


def plot_curves(history, metric, path, *, title=None):
    """Train and test ``metric`` ("loss" or "accuracy") against the epoch, from a run's history.

    ``history`` is a list of per-epoch dicts holding ``epoch``, ``train_<metric>`` and
    ``test_<metric>`` (accuracies as fractions, drawn as percentages; a missing or None value is
    skipped). Returns the path written.
    """
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', got {metric!r}")
    scale = 100.0 if metric == "accuracy" else 1.0
    figure = _figure(6, 4)
    from matplotlib.ticker import MaxNLocator

    ax = figure.add_subplot()
    lines = (("train", "o-", "train (mean over the epoch)"), ("test", "s--", "test (after the epoch)"))
    for split, style, label in lines:
        points = [(row["epoch"], row[f"{split}_{metric}"] * scale)
                  for row in history if row.get(f"{split}_{metric}") is not None]
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, style, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)" if metric == "accuracy" else "loss (cross-entropy)")
    ax.set_title(title or metric)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return _save(figure, path)


CELL_INCHES = 1.1        # width of one image of a prediction grid
LABEL_INCHES = 0.36      # room above each image for its label (two lines of small text)
RED = (0.85, 0.0, 0.0)


def plot_predictions(images, labels, predictions, path, *, class_names=None, title=None, columns=10,
                     invert=True):
    """A grid of images, each labelled with its predicted class; wrong ones framed in red with the
    true class below the prediction.

    images (N, H, W) grey or (N, C, H, W) with C = 1 or 3 (RGB), uint8 (0..255) or float in
    [0, 1]; labels and predictions (N,) ints. ``invert`` draws grey images dark on light (MNIST's
    white-on-black digits read better so); pass False for photographs.
    The grid is drawn as one mosaic image, which is much faster than one plot per image.
    """
    images = np.asarray(images)
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[1] in (1, 3))
    if not shape_ok or not len(images) == len(labels) == len(predictions):
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W) with C = 1 or 3, with one label and "
                         f"prediction each, got images {np.shape(images)}, labels {np.shape(labels)}, "
                         f"predictions {np.shape(predictions)}")
    if len(images) == 0:
        raise ValueError("no images to draw")
    rgb = images / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)
    if rgb.ndim == 3 or rgb.shape[1] == 1:  # grey: (N, H, W) or (N, 1, H, W)
        grey = rgb.reshape(len(rgb), *rgb.shape[-2:])
        rgb = np.repeat((1.0 - grey if invert else grey)[:, None], 3, axis=1)
    rgb = np.clip(rgb.transpose(0, 2, 3, 1), 0.0, 1.0)  # (N, H, W, 3)

    n, h, w = rgb.shape[:3]
    columns = min(columns, n)
    rows = -(-n // columns)
    pad = max(3, w // 7)                                     # pixels around each image
    label = int(np.ceil(LABEL_INCHES * (w + pad) / CELL_INCHES))  # pixels of room for the label
    cell_h, cell_w = label + h + pad, w + pad
    mosaic = np.ones((rows * cell_h + pad, columns * cell_w + pad, 3))
    name = (lambda c: str(class_names[c])) if class_names is not None else str
    places = []
    for i, (image, truth, pred) in enumerate(zip(rgb, labels, predictions)):
        top, left = (i // columns) * cell_h + label + pad, (i % columns) * cell_w + pad
        if truth != pred:
            frame = max(1, pad // 3)
            mosaic[top - frame:top + h + frame, left - frame:left + w + frame] = RED
        mosaic[top:top + h, left:left + w] = image
        places.append((left + w / 2, top - pad / 2, truth, pred))

    title_inches = 0.3 if title else 0.0
    height = CELL_INCHES * mosaic.shape[0] / cell_w
    figure = _figure(CELL_INCHES * mosaic.shape[1] / cell_w, height + title_inches)
    ax = figure.add_axes((0, 0, 1, height / (height + title_inches)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for x, y, truth, pred in places:
        if truth == pred:
            ax.text(x, y, name(pred), ha="center", va="bottom", fontsize=10)
        else:
            ax.text(x, y, f"{name(pred)}\n(true {name(truth)})", ha="center", va="bottom", fontsize=9,
                    color=RED, linespacing=1.0)
    if title:
        figure.suptitle(title, y=1 - 0.05 / (height + title_inches), va="top")
    return _save(figure, path)


def plot_confusion_matrix(cm, path, *, class_names=None, title="confusion matrix"):
    """The (K, K) confusion matrix (rows true, columns predicted) with every count written in its cell.

    Colours follow the count on a log scale, so the few mistakes show beside the large diagonal.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    label_room = 0.08 * max(len(n) for n in names)  # inches for the longest class name
    figure = _figure(max(4.0, 1.2 + 0.5 * k + label_room), max(3.5, 1.0 + 0.5 * k + label_room))
    from matplotlib.colors import LogNorm

    ax = figure.add_subplot()
    shown = np.ma.masked_equal(cm, 0)
    ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(int(cm.max()), 2)))
    for (i, j), count in np.ndenumerate(cm):
        if count:
            dark = count > cm.max() ** 0.5
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    long_names = label_room > 0.2
    ax.set_xticks(range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}\naccuracy {accuracy:.2%}")
    figure.tight_layout()
    return _save(figure, path)


def plot_comparison(results, x, y, path, *, group=None, title=None, ylabel=None, mark=None, sharey=False,
                    ymin=None):
    """Compare runs: ``y`` against ``x`` for a list of result dicts, one panel per ``group`` value.

    The x values are drawn as categories in the order given (so numbers, strings and tuples mix),
    each point labelled with its y value. Rows whose ``mark`` key is true (a sweep's baseline, say)
    are ringed in red. ``sharey``: one y scale for every panel, so that their spreads compare;
    ``ymin``: the bottom of the y axis (e.g. 0 for times), else chosen to fit the values.
    E.g. a sweep's test accuracy per factor:
    ``plot_comparison(rows, "value", "test_accuracy", p, group="factor", mark="baseline")``.
    """
    if not results:
        raise ValueError("results is empty")
    groups = {}
    for row in results:
        groups.setdefault(row[group] if group else None, []).append(row)
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)
    figure = _figure(4.2 * columns, 3.2 * rows + (0.4 if title else 0))
    first = None
    for i, (name, members) in enumerate(groups.items()):
        ax = figure.add_subplot(rows, columns, i + 1, sharey=first if sharey else None)
        first = first or ax
        values = [row[y] for row in members]
        positions = np.arange(len(members))
        ax.plot(positions, values, "o-")
        marked = [p for p, row in zip(positions, members) if mark and row[mark]]
        ax.plot(marked, [values[p] for p in marked], "o", ms=12, mfc="none", mec="red", mew=1.5)
        for position, value in zip(positions, values):
            ax.annotate(f"{value:.4g}", (position, value), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize=8)
        ax.set_xticks(positions, [str(row[x]) for row in members])
        ax.margins(x=0.15, y=0.25)
        if ymin is not None:
            ax.set_ylim(bottom=ymin)
        ax.set_xlabel(str(name) if group else x)
        ax.set_ylabel(ylabel or y)
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_regression(x, target, prediction, losses, path, *, title=None):
    """Two panels: the fitted curve against the target (x, target, prediction (N,), sorted by x),
    and the training loss per step (log scale)."""
    figure = _figure(10, 4)
    fit, curve = figure.subplots(1, 2)
    fit.plot(x, target, "k-", lw=2, label="target")
    fit.plot(x, prediction, "r--", lw=2, label="network")
    fit.set_xlabel("x")
    fit.set_ylabel("y")
    fit.set_title(title or "fit")
    fit.grid(alpha=0.3)
    fit.legend()
    curve.plot(np.arange(1, len(losses) + 1), losses, lw=1)
    curve.set_yscale("log")
    curve.set_xlabel("step")
    curve.set_ylabel("training loss (MSE)")
    curve.set_title("loss")
    curve.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def read_history(run_dir):
    """The per-epoch metrics list of a run directory (its metrics.json)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a fastnn run directory?")
    history = json.loads(path.read_text())
    if not isinstance(history, list) or not history or not all(isinstance(r, dict) for r in history):
        raise ValueError(f"{path} must hold a non-empty list of per-epoch dicts")
    return history


def plot_run(run_dir, *, data_dir=None, backend=None, examples=40):
    """Write a run directory's pictures into it and return their paths.

    Always: loss.png and accuracy.png (train and test, from metrics.json). When the run holds a
    checkpoint (best.npz, else last.npz), that model is evaluated on the MNIST test set (from
    ``data_dir``, else the run's own, else ``load_mnist``'s search order) for
    predictions.png (the first ``examples`` test images with predicted labels, wrong ones in
    red), mistakes.png (the first ``examples`` misclassified ones) and confusion_matrix.png.
    """
    from .data import load_mnist
    from .evaluate import evaluate_checkpoint

    run_dir = Path(run_dir)
    history = read_history(run_dir)
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    model = config.get("model", run_dir.name)
    written = [plot_curves(history, "loss", run_dir / "loss.png", title=f"{model} on MNIST: loss"),
               plot_curves(history, "accuracy", run_dir / "accuracy.png", title=f"{model} on MNIST: accuracy")]
    checkpoint = next((run_dir / name for name in ("best.npz", "last.npz") if (run_dir / name).is_file()), None)
    if checkpoint is None:
        return written
    mnist = load_mnist(data_dir if data_dir is not None else config.get("data_dir"))
    result = evaluate_checkpoint(checkpoint, backend=backend, mnist=mnist)
    images = mnist.test_images
    labels, predictions = result["labels"], result["predictions"]
    source = f"{model}, {checkpoint.name}"
    shown = np.arange(min(examples, len(labels)))
    written.append(plot_predictions(images[shown], labels[shown], predictions[shown], run_dir / "predictions.png",
                                    title=f"the first {len(shown)} test images ({source})"))
    wrong = np.flatnonzero(labels != predictions)[:examples]
    if wrong.size:
        written.append(plot_predictions(images[wrong], labels[wrong], predictions[wrong], run_dir / "mistakes.png",
                                        title=f"the first {wrong.size} misclassified test images ({source})"))
    written.append(plot_confusion_matrix(result["confusion_matrix"], run_dir / "confusion_matrix.png",
                                         title=f"MNIST test set ({source})"))
    return written
