"""Train a model on MNIST: the same as ``fastnn train ...`` (see ``fastnn train --help``).

    python scripts/train_mnist.py --model lenet --backend jit
"""
import sys

from fastnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
