"""The ``fastnn`` command: ``fastnn train``, ``fastnn evaluate``, ``fastnn plot``.

    fastnn train --model lenet --backend jit            # the model's default recipe
    fastnn train --model mlp --hidden 256 256 --batchnorm --dropout 0.2 --epochs 5 --out runs/x
    fastnn train --resume runs/x                        # continue runs/x from runs/x/last.npz
    fastnn evaluate runs/x/best.npz
    fastnn plot runs/x

``main(argv)`` returns the exit status: 0 done, 1 error (diverged training, bad checkpoint,
output directory in the way, ...), 2 bad command line, 130 interrupted by Ctrl-C (143 by SIGTERM;
either way training stops at a step boundary and saves a checkpoint to resume from).
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

from . import checkpoint
from . import train as training
from .checkpoint import CheckpointError
from .kernels import BACKENDS

# Options that may be given again with --resume: they do not change the run's results.
RESUMABLE_OPTIONS = ("epochs", "data_dir")


class UsageError(Exception):
    """A command line that cannot be carried out (reported with exit status 1)."""


def _parser():
    parser = argparse.ArgumentParser(prog="fastnn", description="Train, evaluate and plot MNIST models written "
                                                                "from scratch in NumPy and Numba.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("train", help="train a model on MNIST",
                              description="Train a model on MNIST. Options left out take the model's default "
                                          "recipe (batch size 64, seed 0): " + "; ".join(
                                              f"{model}: " + ", ".join(f"{k} {v}" for k, v in recipe.items())
                                              for model, recipe in training.MODEL_DEFAULTS.items()) + ".")
    run.add_argument("--model", choices=tuple(training.MODEL_DEFAULTS), help="required unless --resume")
    run.add_argument("--hidden", type=int, nargs="+", metavar="WIDTH", help="mlp hidden widths (default 512)")
    run.add_argument("--batchnorm", action="store_true", default=None, help="mlp: BatchNorm1d after each hidden Linear")
    run.add_argument("--dropout", type=float, metavar="P", help="mlp: dropout after each hidden ReLU")
    run.add_argument("--backend", choices=BACKENDS, help="kernel backend (default: $FASTNN_BACKEND, else jit)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int, help="default 64")
    run.add_argument("--optimizer", choices=training.OPTIMIZERS)
    run.add_argument("--lr", type=float)
    run.add_argument("--momentum", type=float, help="for momentum and nesterov (default 0.9)")
    run.add_argument("--weight-decay", type=float, help="default 0.01 for adamw, else 0")
    run.add_argument("--schedule", choices=training.SCHEDULES, help="learning-rate schedule, stepped each epoch")
    run.add_argument("--step-size", type=int, help="step schedule: epochs between decays (default epochs // 3)")
    run.add_argument("--gamma", type=float, help="step schedule: decay factor (default 0.1)")
    run.add_argument("--seed", type=int, help="seeds the weights, dropout and data order (default 0)")
    run.add_argument("--augment", action="store_true", default=None, help="random shifts of up to 2 pixels")
    run.add_argument("--data-dir", help="folder of the MNIST files (default: $FASTNN_DATA_DIR, cache, download)")
    run.add_argument("--limit", type=int, metavar="N", help="train on the first N training images only")
    run.add_argument("--test-limit", type=int, metavar="N", help="test on the first N test images only")
    run.add_argument("--out", type=Path, metavar="DIR", help="output folder (default runs/<model>-<timestamp>)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from DIR/last.npz")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                     help="also write last.npz every STEPS batches (default: at the end of each epoch)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--backend", choices=BACKENDS, help="default: the one the run used")

    plot = commands.add_parser("plot", help="write PNG pictures of a run into its folder")
    plot.add_argument("run_dir", type=Path)
    plot.add_argument("--data-dir")
    plot.add_argument("--backend", choices=BACKENDS, help="default: the one the run used")
    return parser


def _config_options(args):
    """The Config fields given on the command line."""
    fields = {f.name for f in dataclasses.fields(training.Config)} - {"model"}
    return {name: value for name, value in vars(args).items() if name in fields and value is not None}


def _train(args):
    options = _config_options(args)
    if args.resume is not None:
        if args.model is not None or args.out is not None:
            raise UsageError("--resume DIR continues the run in DIR with its stored configuration; "
                             "leave out --model and --out")
        fixed = sorted(set(options) - set(RESUMABLE_OPTIONS))
        if fixed:
            raise UsageError(f"cannot change {', '.join('--' + n.replace('_', '-') for n in fixed)} when resuming: "
                             f"the run's stored configuration is used (only {', '.join(RESUMABLE_OPTIONS)} may change)")
        out_dir = args.resume
        stored = checkpoint.read(out_dir / "last.npz")
        try:
            config = training.Config.from_dict({**stored.config, **options})
        except ValueError as error:
            raise UsageError(f"{stored.path}: {error}") from None
        planned = stored.config.get("epochs")
        if config.schedule == "cosine" and planned is not None and config.epochs > planned:
            print(f"note: this run's cosine schedule was planned over {planned} epochs; it keeps that "
                  f"plan, so after epoch {planned} the learning rate rises again (as PyTorch's "
                  f"CosineAnnealingLR does). For a schedule over {config.epochs} epochs, start a new run.",
                  file=sys.stderr)
    else:
        stored = None
        if args.model is None:
            raise UsageError("--model is required (or --resume DIR)")
        config = training.Config.for_model(args.model, **options)
        out_dir = args.out or Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise UsageError(f"output directory {out_dir} already exists and is not empty; choose another "
                             f"--out, or continue that run with --resume {out_dir}")
    print(f"{'resuming' if args.resume else 'training'} {config.model} on the {config.backend} backend; "
          f"writing to {out_dir}", flush=True)
    try:
        history = training.run(config, out_dir, resume=stored, progress=not args.no_progress,
                               checkpoint_every=args.checkpoint_every, log=lambda line: print(line, flush=True))
    except training.TrainingInterrupted as stop:
        print(f"\n{stop}.\nResume with: fastnn train --resume {out_dir}", file=sys.stderr)
        return 128 + int(stop.signum)
    best = max(record["test_accuracy"] for record in history)
    print(f"done: test accuracy {history[-1]['test_accuracy']:.2%} after {len(history)} epochs "
          f"(best {best:.2%}); files in {out_dir}")
    return 0


def _evaluate(args):
    from .evaluate import evaluate_checkpoint, format_report

    print(format_report(evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, backend=args.backend)))
    return 0


def _plot(args):
    from .plot import plot_run

    for path in plot_run(args.run_dir, data_dir=args.data_dir, backend=args.backend):
        print(path)
    return 0


def main(argv=None):
    """Run the ``fastnn`` command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    command = {"train": _train, "evaluate": _evaluate, "plot": _plot}[args.command]
    try:
        return command(args)
    # Errors the user can act on. RuntimeError: TrainingDiverged, a failed MNIST download;
    # ImportError: matplotlib missing for plot.
    except (UsageError, CheckpointError, ValueError, OSError, RuntimeError, ImportError) as error:
        print(f"fastnn {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nfastnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
