"""Train an MLP on a folder of images: one sub-folder per class, any format Pillow reads.

    root/cat/001.png, root/cat/002.jpg, ..., root/dog/001.png, ...

The images are resized to --size (grey by default, --rgb for colour), split per class into a
training and a test part (--test-fraction), normalised with the training part's mean and
standard deviation, and an MLP (Flatten, then Linear + ReLU per --hidden width, then Linear to
one output per class) is trained with Adam and cross-entropy.

Writes into --out: history.csv (per-epoch losses and accuracies), accuracy.png and loss.png
(train and test curves), predictions.png (test images with predicted labels, wrong in red) and
confusion_matrix.png; prints the per-epoch table, the history in Markdown and the test accuracy.

    python scripts/train_image_folder.py path/to/folder --size 32 --epochs 20
"""
import argparse
from pathlib import Path

import fastnn  # noqa: F401  (before NumPy: fastnn's thread defaults, see its docstring)
import numpy as np
from fastnn import nn
from fastnn.data import DataLoader, load_image_folder
from fastnn.evaluate import confusion_matrix, markdown_table, predict, write_csv
from fastnn.kernels import BACKENDS
from fastnn.optim import Adam
from fastnn.train import TABLE_HEADER, Trainer


def image_mlp(in_features, hidden, num_classes, *, seed=0, backend=None):
    """Flatten, then Linear + ReLU per width in ``hidden``, then Linear(..., num_classes)."""
    rng = np.random.default_rng(seed)
    layers, width = [nn.Flatten()], in_features
    for size in hidden:
        layers += [nn.Linear(width, size, rng=rng, backend=backend), nn.ReLU(backend=backend)]
        width = size
    layers.append(nn.Linear(width, num_classes, rng=rng, backend=backend))
    return nn.Sequential(*layers)


def split_per_class(labels, test_fraction, rng):
    """Indices (train, test): in each class a ``test_fraction`` share (rounded) goes to the test part."""
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(test_fraction * len(members)))
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder holding one sub-folder of images per class")
    parser.add_argument("--size", type=int, default=28, help="resize images to SIZE x SIZE (default 28)")
    parser.add_argument("--rgb", action="store_true", help="keep colour (default: convert to grey)")
    parser.add_argument("--hidden", default="256", help="comma-separated hidden widths (default 256)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/image_folder"),
                        help="output directory (created; its results files are replaced)")
    args = parser.parse_args(argv)
    try:
        args.hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        parser.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    if not 0 < args.test_fraction < 1:
        parser.error(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    return args


def main(argv=None):
    """Train and report; returns {"test_accuracy", "history", "class_names", "paths"}."""
    args = parse_args(argv)
    images, labels, class_names = load_image_folder(args.root, size=args.size, grayscale=not args.rgb)
    rng = np.random.default_rng(args.seed)
    train_index, test_index = split_per_class(labels, args.test_fraction, rng)
    if len(train_index) == 0 or len(test_index) == 0:
        raise ValueError(f"{args.root}: {len(images)} images are too few to split into training and test parts "
                         f"with --test-fraction {args.test_fraction}")
    scaled = images[train_index] / 255.0
    mean, std = float(scaled.mean()), float(scaled.std()) or 1.0
    train_loader = DataLoader(images[train_index], labels[train_index], args.batch_size, shuffle=True,
                              seed=args.seed, mean=mean, std=std)
    test_loader = DataLoader(images[test_index], labels[test_index], 256, mean=mean, std=std)
    print(f"{args.root}: {len(class_names)} classes ({', '.join(class_names)}), images {images.shape[1:]}, "
          f"{len(train_index)} for training, {len(test_index)} for testing")

    model = image_mlp(int(np.prod(images.shape[1:])), args.hidden, len(class_names), seed=args.seed,
                      backend=args.backend)
    trainer = Trainer(model, Adam(model.parameters(), lr=args.lr), train_loader, test_loader, progress=False)
    print(TABLE_HEADER)
    history = trainer.fit(args.epochs)

    predictions = predict(model, test_loader)
    truth = labels[test_index]
    cm = confusion_matrix(truth, predictions, num_classes=len(class_names))
    accuracy = float(np.trace(cm) / cm.sum())
    args.out.mkdir(parents=True, exist_ok=True)
    from fastnn.plot import plot_confusion_matrix, plot_curves, plot_predictions

    shown = slice(0, 40)
    paths = [write_csv(history, args.out / "history.csv"),
             plot_curves(history, "accuracy", args.out / "accuracy.png"),
             plot_curves(history, "loss", args.out / "loss.png"),
             plot_predictions(images[test_index][shown], truth[shown], predictions[shown],
                              args.out / "predictions.png", class_names=class_names, invert=False,
                              title=f"test images, {accuracy:.1%} correct in all"),
             plot_confusion_matrix(cm, args.out / "confusion_matrix.png", class_names=class_names,
                                   title=f"{args.root.name} test set")]
    print(markdown_table(history))
    print(f"\ntest accuracy {accuracy:.2%} ({int(np.trace(cm))}/{int(cm.sum())})")
    print("wrote " + ", ".join(str(p) for p in paths))
    return {"test_accuracy": accuracy, "history": history, "class_names": class_names, "paths": paths}


if __name__ == "__main__":
    main()
