#!/usr/bin/env python
"""Train the same models in fastnn and in PyTorch, side by side: images/s, ratio, peak memory.

Both frameworks get the same architecture with the same initial weights (the PyTorch model is a
copy of the fastnn one), float32, 2 threads, SGD (lr 0.01, momentum 0.9), cross-entropy, and
the same batches in the same order: both iterate a fastnn DataLoader with the same seed, so every
epoch's permutation is the same (PyTorch receives the batches through torch.from_numpy, without
a copy). Each training run and each inference run happens in a fresh process of its own, so that
peak memory (ru_maxrss) belongs to that run alone, and jit compilation or loading happens there
before the clock starts.

Training: images/s of one epoch (median of --epochs epochs). Inference: the 10,000 test images at
batch 1000 in eval mode (seed_cnn and lenet; median of at least 3 passes).

PyTorch is optional (never a dependency of fastnn): without it only fastnn is shown.

    python scripts/compare_torch.py                                     # 4 models x batch 64, 256
    python scripts/compare_torch.py --models lenet --batch-sizes 256 --epochs 1 --limit 6000
"""
import argparse
import importlib.util
import json
import math
import pathlib
import resource
import statistics
import subprocess
import sys
import time

if sys.argv[1:3] == ["--worker", "torch"]:
    # A PyTorch measurement (see run_worker): PyTorch's OpenMP reads its settings when torch is
    # imported, so that happens before importing fastnn puts fastnn's thread defaults in place.
    import torch  # noqa: F401

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "asv_bench"))
import benchmarks  # noqa: E402  (first: it fixes 2 threads before NumPy and Numba start)

from benchmarks.common import (LEARNING_RATE, MODEL_NAMES, MOMENTUM, build_model,  # noqa: E402
                               epoch_seconds, inference_seconds, load_mnist, machine_note,
                               make_optimizer, print_table, warm_up_model)
from fastnn import nn  # noqa: E402
from fastnn.data import DataLoader  # noqa: E402

INFERENCE_MODELS = ("seed_cnn", "lenet")
INFERENCE_BATCH = 1000
INFERENCE_PASSES = 3
TORCH_INSTALL = "pip install torch==2.13.0"

# Issue 5's targets: fastnn / PyTorch images/s, and lenet's peak memory in a batch-256 epoch.
TRAIN_RATIO_TARGETS = {"mlp": 1.1, "mlp_bn_dropout": 1.3, "seed_cnn": 5.0, "lenet": 1.3}
INFERENCE_RATIO_TARGETS = {"seed_cnn": 3.0, "lenet": 1.5}
PEAK_MEMORY_TARGET = ("lenet", 256, 1536)     # model, batch, MiB


# -- PyTorch ------------------------------------------------------------------------------------

def to_torch(model):
    """A ``torch.nn.Sequential`` with ``model``'s layers (a fastnn Sequential) and a copy of its
    weights; fastnn's Linear weight (in, out) becomes PyTorch's (out, in)."""
    import torch

    layers = []
    for layer in model.children():
        if isinstance(layer, nn.Linear):
            copy = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            tensors = {"weight": layer.weight.data.T, "bias": None if layer.bias is None else layer.bias.data}
        elif isinstance(layer, nn.Conv2d):
            copy = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   stride=layer.stride, padding=layer.padding)
            tensors = {"weight": layer.weight.data, "bias": layer.bias.data}
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            kind = torch.nn.BatchNorm1d if isinstance(layer, nn.BatchNorm1d) else torch.nn.BatchNorm2d
            copy = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
            tensors = {"weight": layer.weight.data, "bias": layer.bias.data,
                       "running_mean": layer.running_mean, "running_var": layer.running_var}
        elif isinstance(layer, nn.MaxPool2d):
            copy, tensors = torch.nn.MaxPool2d(layer.kernel_size, stride=layer.stride), {}
        elif isinstance(layer, nn.ReLU):
            copy, tensors = torch.nn.ReLU(), {}
        elif isinstance(layer, nn.Flatten):
            copy, tensors = torch.nn.Flatten(), {}
        elif isinstance(layer, nn.Dropout):
            copy, tensors = torch.nn.Dropout(layer.p), {}
        else:
            raise ValueError(f"no PyTorch counterpart for layer {layer!r}")
        with torch.no_grad():
            for name, array in tensors.items():
                if array is not None:
                    getattr(copy, name).copy_(torch.from_numpy(array.copy()))
        layers.append(copy)
    return torch.nn.Sequential(*layers)


def torch_epoch_seconds(model, loader, criterion, optimizer):
    """One PyTorch epoch doing what fastnn.train.train_epoch does per batch: forward, loss, its
    value checked finite, backward, step, running loss and accuracy."""
    import torch

    model.train()
    loss_sum, correct = 0.0, 0
    start = time.perf_counter()
    for x, y in loader:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        output = model(x)
        loss = criterion(output, y)
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"PyTorch training diverged: loss {value}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += value * len(y)
        correct += int((output.argmax(dim=1) == y).sum())
    return time.perf_counter() - start


def torch_inference_seconds(model, loader):
    import torch

    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            model(torch.from_numpy(x)).argmax(dim=1)
    return time.perf_counter() - start


# -- one measurement, run in its own process ----------------------------------------------------

def train_worker(framework, model_name, batch, epochs, limit, backend):
    """Train ``epochs`` epochs on the first ``limit`` training images; returns a dict with
    ``seconds`` (per epoch), ``images`` (per epoch) and ``warm_up_seconds``."""
    mnist = load_mnist()
    images, labels = mnist.train_images[:limit], mnist.train_labels[:limit]
    loader = DataLoader(images, labels, batch_size=batch, shuffle=True, seed=0)
    start = time.perf_counter()
    if framework == "fastnn":
        warm_up_model(model_name, backend, batch, images, labels)
        model = build_model(model_name, backend)
        optimizer = make_optimizer(model)
        warm_up = time.perf_counter() - start
        seconds = [epoch_seconds(model, loader, optimizer) for _ in range(epochs)]
    else:
        import torch

        torch.manual_seed(0)
        warm_loader = DataLoader(images[:2 * batch], labels[:2 * batch], batch_size=batch)
        throwaway = to_torch(build_model(model_name))
        torch_epoch_seconds(throwaway, warm_loader, torch.nn.CrossEntropyLoss(),
                            torch.optim.SGD(throwaway.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM))
        model = to_torch(build_model(model_name))
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        warm_up = time.perf_counter() - start
        seconds = [torch_epoch_seconds(model, loader, torch.nn.CrossEntropyLoss(), optimizer)
                   for _ in range(epochs)]
    return {"seconds": seconds, "images": len(labels), "warm_up_seconds": warm_up}


def inference_worker(framework, model_name, passes, limit, backend):
    """Predict the first ``limit`` test images ``passes`` times at batch 1000 (after one untimed
    batch); returns a dict with ``seconds`` (per pass) and ``images`` (per pass)."""
    mnist = load_mnist()
    images, labels = mnist.test_images[:limit], mnist.test_labels[:limit]
    loader = DataLoader(images, labels, batch_size=INFERENCE_BATCH)
    warm_loader = DataLoader(images[:INFERENCE_BATCH], labels[:INFERENCE_BATCH], batch_size=INFERENCE_BATCH)
    if framework == "fastnn":
        model = build_model(model_name, backend)
        run = inference_seconds
    else:
        model = to_torch(build_model(model_name))
        run = torch_inference_seconds
    run(model, warm_loader)
    return {"seconds": [run(model, loader) for _ in range(passes)], "images": len(labels)}


def worker_main(args):
    if args.worker == "torch":
        import torch

        torch.set_num_threads(benchmarks.THREADS)
    if args.task == "train":
        result = train_worker(args.worker, args.model, args.batch, args.epochs, args.limit, args.backend)
    else:
        result = inference_worker(args.worker, args.model, max(args.epochs, INFERENCE_PASSES),
                                  args.limit, args.backend)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    print(json.dumps(result))


def run_worker(framework, task, model, batch, args):
    """Run one measurement in a fresh Python process; returns its result dict, or None (with the
    error shown) if the process failed, so that one broken run does not lose the others."""
    command = [sys.executable, __file__, "--worker", framework, "--task", task, "--model", model,
               "--batch", str(batch), "--epochs", str(args.epochs), "--backend", args.backend]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    label = f"  {framework:6} {task:9} {model:15} batch {batch:4}:"
    # PyTorch runs in the user's environment, not under fastnn's thread defaults (its OpenMP
    # threads would obey them too): only the thread counts are shared. Its worker imports torch
    # before fastnn, which would set them again.
    env = benchmarks.ENVIRONMENT_WITHOUT_FASTNN if framework == "torch" else None
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    if finished.returncode != 0:
        print(f"{label} failed\n{finished.stderr}", file=sys.stderr, flush=True)
        return None
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    print(f"{label} {images_per_second(result):,.0f} images/s", file=sys.stderr, flush=True)
    return result


# -- the report ---------------------------------------------------------------------------------

def images_per_second(result):
    return result["images"] / statistics.median(result["seconds"])


def speed_cells(results, compared, target):
    """Table cells for one row: fastnn's images/s, then (when compared) PyTorch's, the ratio,
    the target ratio and PASS/MISS."""
    def rate(result):
        return "failed" if result is None else f"{images_per_second(result):,.0f}"

    cells = [rate(results["fastnn"])]
    if compared:
        cells.append(rate(results["torch"]))
        if results["fastnn"] and results["torch"]:
            ratio = images_per_second(results["fastnn"]) / images_per_second(results["torch"])
            if target is None:
                cells += [f"{ratio:.2f}", "", ""]
            else:
                cells += [f"{ratio:.2f}", f">={target:g}x", "PASS" if ratio >= target else "MISS"]
        else:
            cells += ["", "", ""]
    return cells


def images_counted(table):
    """How many images each run of a table measured (from its first successful run)."""
    return next((r["images"] for results in table.values() for r in results.values() if r), 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the median is shown")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first LIMIT images (and infer on at most LIMIT test images)")
    parser.add_argument("--backend", choices=("vectorized", "jit"), default="jit", help="fastnn's backend")
    parser.add_argument("--no-torch", action="store_true", help="measure fastnn only")
    parser.add_argument("--worker", choices=("fastnn", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=("train", "inference"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.worker:
        return worker_main(args)
    if args.limit is not None and args.limit < max(args.batch_sizes) * 2:
        parser.error(f"--limit must be at least twice the largest batch size, got {args.limit}")

    try:  # once here, so that missing data is one clear error rather than one per worker
        load_mnist()
    except (OSError, RuntimeError, ValueError) as exc:
        parser.exit(1, f"compare_torch.py: cannot load MNIST: {exc}\n")

    print(machine_note())
    frameworks = ["fastnn"]
    if args.no_torch:
        pass
    elif importlib.util.find_spec("torch") is None:
        print(f"PyTorch is not installed, so fastnn is shown alone. To compare: {TORCH_INSTALL}\n")
    else:
        frameworks.append("torch")
    compared = len(frameworks) == 2

    train = {}
    for model in args.models:
        for batch in args.batch_sizes:
            train[model, batch] = {f: run_worker(f, "train", model, batch, args) for f in frameworks}
    infer = {}
    for model in (m for m in args.models if m in INFERENCE_MODELS):
        infer[model] = {f: run_worker(f, "inference", model, INFERENCE_BATCH, args) for f in frameworks}

    speed_header = [f"fastnn ({args.backend})"] + (["torch", "ratio", "target", ""] if compared else [])
    print(f"Training: one epoch of {images_counted(train):,} images, median of {args.epochs}, float32, "
          f"{benchmarks.THREADS} threads, SGD momentum {MOMENTUM} (images/s)")
    print_table(["model", "batch"] + speed_header,
                [[model, batch] + speed_cells(results, compared, TRAIN_RATIO_TARGETS.get(model))
                 for (model, batch), results in train.items()])
    if infer:
        print(f"\nInference: {images_counted(infer):,} test images at batch {INFERENCE_BATCH}, "
              "eval mode (images/s)")
        print_table(["model"] + speed_header,
                    [[model] + speed_cells(results, compared, INFERENCE_RATIO_TARGETS.get(model))
                     for model, results in infer.items()])

    print("\nPeak memory of each training run's own process (ru_maxrss, MiB; includes the dataset "
          "and the libraries), and fastnn's untimed warm-up (jit load or compile)")
    rows = []
    for (model, batch), results in train.items():
        row = [model, batch]
        for framework in frameworks:
            result = results[framework]
            row.append("failed" if result is None else f"{result['peak_rss_mib']:,.0f}")
        fastnn_result = results["fastnn"]
        row.append("" if fastnn_result is None else f"{fastnn_result['warm_up_seconds']:.2f} s")
        target = ""
        if (model, batch) == PEAK_MEMORY_TARGET[:2] and fastnn_result is not None:
            limit_mib = PEAK_MEMORY_TARGET[2]
            target = f"<={limit_mib} MiB {'PASS' if fastnn_result['peak_rss_mib'] <= limit_mib else 'MISS'}"
        rows.append(row + [target])
    print_table(["model", "batch"] + [f"{f} MiB" for f in frameworks] + ["fastnn warm-up", "target"], rows)

    failed = [r for table in (train, infer) for results in table.values() for r in results.values()
              if r is None]
    if failed:
        sys.exit(f"{len(failed)} run(s) failed; their errors are shown above")

if __name__ == "__main__":
    main()
