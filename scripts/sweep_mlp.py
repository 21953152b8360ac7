"""MLP sweep on MNIST: depth, width, learning rate, batch size, dropout and optimizer, one at a time.

Every run is the baseline recipe with one factor changed, so the number of runs stays modest
(17 with every factor) and each panel of the picture isolates one factor's effect:

    baseline: one hidden layer of 512, SGD with momentum 0.9, lr 0.05, batch 64, no dropout,
              cosine schedule (fastnn's own mlp recipe), trained for --epochs epochs
    depth     1, 2, 3, 5 hidden layers, all of the baseline width
    width     64, 128, 256, 512, 1024 units
    lr        0.005, 0.02, 0.05, 0.2
    batch     16, 64, 256
    dropout   0, 0.2, 0.5
    optimizer sgd (lr 0.1), momentum (lr 0.05), adam (lr 0.001): each optimizer with a learning
              rate in its usual range, since one rate for all would compare them unfairly

The baseline is trained once and shown, ringed, in every panel. Writes into --out: results.csv (one row
per factor value: test/train accuracy, test loss, training seconds), accuracy.png and
seconds.png (one panel per factor); prints the table in Markdown.

    python scripts/sweep_mlp.py                           # full dataset, 3 epochs per run
    python scripts/sweep_mlp.py --epochs 1 --limit 2000 --factors depth,optimizer
"""
import argparse
import time
from pathlib import Path

from fastnn.data import load_mnist
from fastnn.evaluate import markdown_table, write_csv
from fastnn.kernels import BACKENDS
from fastnn.train import Config, Trainer, build_loaders, build_model, build_optimizer, build_schedule

BASELINE = {"hidden": (512,), "optimizer": "momentum", "lr": 0.05, "batch_size": 64, "dropout": 0.0}
OPTIMIZER_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-3}

#: factor -> [(value shown, Config options for that value)]
FACTORS = {
    "depth": [(n, {"hidden": (512,) * n}) for n in (1, 2, 3, 5)],
    "width": [(w, {"hidden": (w,)}) for w in (64, 128, 256, 512, 1024)],
    "lr": [(lr, {"lr": lr}) for lr in (0.005, 0.02, 0.05, 0.2)],
    "batch_size": [(b, {"batch_size": b}) for b in (16, 64, 256)],
    "dropout": [(p, {"dropout": p}) for p in (0.0, 0.2, 0.5)],
    "optimizer": [(name, {"optimizer": name, "lr": lr}) for name, lr in OPTIMIZER_LR.items()],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first LIMIT training and test images (quick runs)")
    parser.add_argument("--factors", default=",".join(FACTORS),
                        help=f"comma-separated subset of {','.join(FACTORS)} (default all)")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="kernel backend (default: fastnn's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("results/sweep_mlp"),
                        help="output directory (created; its results files are replaced)")
    args = parser.parse_args(argv)
    args.factors = [f.strip() for f in args.factors.split(",") if f.strip()]
    unknown = [f for f in args.factors if f not in FACTORS]
    if unknown or not args.factors:
        parser.error(f"--factors: unknown {unknown}; choose from {', '.join(FACTORS)}")
    return args


def train_one(config, mnist):
    """Train ``config`` (no files written); the last epoch's record plus total training seconds."""
    model = build_model(config)
    optimizer = build_optimizer(config, model.parameters())
    train_loader, test_loader = build_loaders(config, mnist)
    trainer = Trainer(model, optimizer, train_loader, test_loader, schedule=build_schedule(config, optimizer),
                      progress=False, log=lambda line: None)
    history = trainer.fit(config.epochs)
    return {**history[-1], "seconds": sum(record["seconds"] for record in history)}


def main(argv=None):
    """Run the sweep, write the table and pictures; return {"rows", "paths"}."""
    args = parse_args(argv)
    common = {"epochs": args.epochs, "seed": args.seed, "limit": args.limit, "test_limit": args.limit,
              "schedule": "cosine"}
    if args.backend:
        common["backend"] = args.backend
    mnist = load_mnist(args.data_dir)
    # A tiny run first, so that no run's time includes compiling the JIT kernels.
    train_one(Config(model="mlp", **{**common, "epochs": 1, "limit": 64, "test_limit": 64}), mnist)
    finished = {}  # Config options (as a sorted tuple) -> result, so the baseline is trained once
    rows = []
    for factor in args.factors:
        for value, change in FACTORS[factor]:
            options = {**BASELINE, **change}
            key = tuple(sorted(options.items()))
            if key not in finished:
                start = time.perf_counter()
                finished[key] = train_one(Config(model="mlp", **options, **common), mnist)
                print(f"{factor}={value}: test accuracy {finished[key]['test_accuracy']:.2%} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
            result = finished[key]
            rows.append({"factor": factor, "value": value, "baseline": options == BASELINE,
                         "hidden": "x".join(map(str, options["hidden"])), "optimizer": options["optimizer"],
                         "lr": options["lr"],
                         "batch_size": options["batch_size"], "dropout": options["dropout"],
                         "test_accuracy": result["test_accuracy"], "train_accuracy": result["train_accuracy"],
                         "test_loss": result["test_loss"], "seconds": result["seconds"]})

    args.out.mkdir(parents=True, exist_ok=True)
    from fastnn.plot import plot_comparison

    data = f"{args.limit} training images" if args.limit else "60,000 training images"
    backend = args.backend or Config().backend
    shown = [{**row, "test_accuracy": 100 * row["test_accuracy"]} for row in rows]
    paths = [write_csv(rows, args.out / "results.csv"),
             plot_comparison(shown, "value", "test_accuracy", args.out / "accuracy.png", group="factor",
                             mark="baseline", sharey=True, ylabel="test accuracy (%)",
                             title=f"MLP on MNIST, one factor at a time from the baseline (ringed); "
                                   f"{args.epochs} epochs, {data}"),
             plot_comparison(rows, "value", "seconds", args.out / "seconds.png", group="factor",
                             mark="baseline", sharey=True, ymin=0, ylabel="training seconds",
                             title=f"training time ({args.epochs} epochs, {data}, {backend} backend)")]
    print(markdown_table(rows))
    print("wrote " + ", ".join(str(p) for p in paths))
    return {"rows": rows, "paths": paths}


if __name__ == "__main__":
    main()
