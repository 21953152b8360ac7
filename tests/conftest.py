import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"

# Tests read the real MNIST files from ../shared/data/mnist unless FASTNN_DATA_DIR says otherwise.
if "FASTNN_DATA_DIR" not in os.environ and SHARED_MNIST.is_dir():
    os.environ["FASTNN_DATA_DIR"] = str(SHARED_MNIST)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FASTNN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set FASTNN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_dir():
    """Directory of the real MNIST files; the integration tests need it."""
    path = os.environ.get("FASTNN_DATA_DIR")
    if not path or not pathlib.Path(path).is_dir():
        pytest.fail("real MNIST files not found: set FASTNN_DATA_DIR to the folder holding them")
    return pathlib.Path(path)
