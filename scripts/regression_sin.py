"""Regression with fastnn: fit y = sin(2 pi x) on [0, 1] with a 1-100-100-1 MLP, MSE loss and Adam.

The training set is `--points` values of x drawn uniformly from [0, 1]; every step trains on a
random mini-batch of them. The fit is measured on 1,000 evenly spaced x (the test MSE). For
scale: a network that always answers 0 has MSE 0.5, the variance of sin(2 pi x) over [0, 1].

Writes into --out: results.csv (training loss and test MSE every --log-every steps), fit.png
(network against target, and the loss per step); prints the same table in Markdown.

    python scripts/regression_sin.py                      # 5,000 steps, a few seconds
    python scripts/regression_sin.py --steps 300 --out /tmp/sin
"""
import argparse
import time
from pathlib import Path

import fastnn  # noqa: F401  (before NumPy: fastnn's thread defaults, see its docstring)
import numpy as np
from fastnn import nn
from fastnn.evaluate import markdown_table, write_csv
from fastnn.losses import MSELoss
from fastnn.optim import Adam


def sin_mlp(seed=0):
    """Linear(1, 100), ReLU, Linear(100, 100), ReLU, Linear(100, 1): inputs (N, 1) -> (N, 1)."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(1, 100, rng=rng), nn.ReLU(),
                         nn.Linear(100, 100, rng=rng), nn.ReLU(),
                         nn.Linear(100, 1, rng=rng))


def target(x):
    return np.sin(2 * np.pi * x)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="Adam steps (default 5000)")
    parser.add_argument("--points", type=int, default=1000, help="training points (default 1000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--log-every", type=int, default=None, help="table row interval (default steps/10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/regression_sin"),
                        help="output directory (created; its results files are replaced)")
    return parser.parse_args(argv)


def main(argv=None):
    """Train, write the table and picture; return {"test_mse", "rows", "paths"}."""
    args = parse_args(argv)
    for name in ("steps", "points", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    log_every = args.log_every or max(1, args.steps // 10)
    rng = np.random.default_rng(args.seed)
    x_train = rng.random((args.points, 1)).astype(np.float32)
    y_train = target(x_train).astype(np.float32)
    x_test = np.linspace(0, 1, 1000, dtype=np.float32)[:, None]
    y_test = target(x_test).astype(np.float32)

    model = sin_mlp(args.seed)
    criterion = MSELoss()
    optimizer = Adam(model.parameters(), lr=args.lr)
    losses, rows = [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = rng.integers(0, args.points, size=args.batch_size)
        optimizer.zero_grad()
        loss = criterion(model(x_train[batch]), y_train[batch])
        model.backward(loss.backward())
        optimizer.step()
        losses.append(float(loss))
        if step % log_every == 0 or step == args.steps:
            test_mse = float(criterion(model(x_test), y_test))
            rows.append({"step": step, "train_loss": float(np.mean(losses[-log_every:])),
                         "test_mse": test_mse, "seconds": time.perf_counter() - start})

    args.out.mkdir(parents=True, exist_ok=True)
    from fastnn.plot import plot_regression

    paths = [write_csv(rows, args.out / "results.csv"),
             plot_regression(x_test[:, 0], y_test[:, 0], model(x_test)[:, 0], losses, args.out / "fit.png",
                             title=f"sin(2πx), 1-100-100-1 MLP, {args.steps} Adam steps")]
    print(markdown_table(rows))
    print(f"\nfinal test MSE {rows[-1]['test_mse']:.5f} (predicting 0 everywhere gives 0.5)")
    print("wrote " + ", ".join(str(p) for p in paths))
    return {"test_mse": rows[-1]["test_mse"], "rows": rows, "paths": paths}


if __name__ == "__main__":
    main()
