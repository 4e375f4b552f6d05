"""Shared pytest fixtures, and the guard that keeps the suite inside the repository.

Every file a test reads must live in the repository (``tests/data/``, ``model/zoo/``, the weights
cache under ``build/``) so that a bare clone passes ``make test``. The guard below watches every
``open`` while a test runs (a Python audit hook, PEP 578) and fails the test that touched a path
outside the repository, the temporary directories and the Python installation.
"""

from __future__ import annotations

import os
import random
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

__all__ = ["DATA_DIR", "REPO_ROOT", "darknet_tiny96", "fuzz_seed", "outside_repository",
           "reference_quantized"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"

# Matplotlib keeps a font cache in the home directory unless told otherwise.
os.environ.setdefault("MPLCONFIGDIR", str(REPO_ROOT / "build" / "mplconfig"))

# What a test may read besides the repository: the interpreter and its packages, the operating
# system's own files (devices, shared libraries, fonts, locale) and temporary files.
_ALLOWED_ROOTS = tuple(Path(p).resolve() for p in {
    REPO_ROOT, sys.prefix, sys.base_prefix, sys.exec_prefix,
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"],
    "/dev", "/proc", "/sys", "/usr", "/lib", "/lib64", "/etc", "/opt",
})
# Temporary files are only those pytest and the tempfile module make: a clone that lives in the
# temporary directory itself must not reach its neighbours (``/tmp/shared`` beside ``/tmp/clone``).
_TEMP_DIR = Path(tempfile.gettempdir()).resolve()
_TEMP_PREFIXES = ("pytest-of-", tempfile.gettempprefix())


def outside_repository(path) -> bool:
    """Whether a test that reads ``path`` depends on something a bare clone does not have."""
    try:
        resolved = Path(os.fsdecode(path)).resolve()
    except (TypeError, ValueError, OSError):
        return False  # file descriptors and the like
    if any(resolved == root or root in resolved.parents for root in _ALLOWED_ROOTS):
        return False
    if _TEMP_DIR in resolved.parents:
        top = resolved.relative_to(_TEMP_DIR).parts[0]
        return not top.startswith(_TEMP_PREFIXES)
    return True


_touched: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | bytes | os.PathLike) \
            and outside_repository(args[0]):
        _touched.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _stays_inside_repository():
    """Fail the test that opened a file outside the repository (after it ran, so that a library
    catching the open's error cannot hide it)."""
    _touched.clear()
    yield
    if _touched:
        paths = ", ".join(sorted(set(_touched))[:5])
        _touched.clear()
        pytest.fail(f"the test read outside the repository ({REPO_ROOT}): {paths}; copy what it "
                    "needs into tests/data/", pytrace=False)


@pytest.fixture(scope="session")
def fuzz_seed() -> int:
    """The seed of this session's random tests: ``OWLET_SEED`` if set, else a fresh one.

    Tests derive their random draws (layers, data, DDR timing) from it and name it in every
    failure message as ``OWLET_SEED=<n>``; setting that variable reproduces the run.
    """
    if os.environ.get("OWLET_SEED"):
        seed = int(os.environ["OWLET_SEED"])
    elif os.environ.get("PYTEST_XDIST_TESTRUNUID"):  # one seed for all workers of an xdist run
        seed = int(os.environ["PYTEST_XDIST_TESTRUNUID"], 16) % (1 << 32)
    else:
        seed = random.SystemRandom().randrange(1 << 32)
    print(f"OWLET_SEED={seed}")
    return seed


@pytest.fixture(scope="session")
def darknet_tiny96() -> Path:
    """The real darknet's outputs for the reduced tiny-YOLOv2 (``tests/data/darknet-tiny96``).

    The network and image are ``model.zoo.REFERENCE_CFG``, ``REFERENCE_WEIGHTS`` and
    ``DOG_IMAGE``; see ``tests/data/README.md``.
    """
    return DATA_DIR / "darknet-tiny96"


@pytest.fixture(scope="session")
def reference_quantized():
    """The reference network quantized on its image (max calibration), and its int8 input.

    Returns ``(QuantizedNetwork, int8 array (3, 96, 96))``; shared, so tests must not modify it.
    """
    from model.darknet import load_darknet
    from model.golden import quantize_input
    from model.pipeline import prepare_input
    from model.quant import quantize_network
    from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS

    net = load_darknet(REFERENCE_CFG, REFERENCE_WEIGHTS)
    x, _ = prepare_input(DOG_IMAGE, net.input_shape)
    return quantize_network(net, [x]), quantize_input(x)
