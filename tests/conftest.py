"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["reference_dir", "reference_quantized"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared reference data directory (outputs of the real darknet and friends).

    Looked up at ``../shared/reference`` next to the repository, or at ``$OWLET_REFERENCE``. Missing
    data fails the test instead of skipping it: a silently skipped oracle proves nothing.
    """
    path = Path(os.environ.get("OWLET_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))
    if not path.is_dir():
        pytest.fail(f"reference data not found at {path} (set OWLET_REFERENCE to its location)")
    return path


@pytest.fixture(scope="session")
def reference_quantized(reference_dir):
    """The reference network quantized on its image (max calibration), and its int8 input.

    Returns ``(QuantizedNetwork, int8 array (3, 96, 96))``; shared, so tests must not modify it.
    """
    from model.darknet import load_darknet
    from model.golden import quantize_input
    from model.pipeline import prepare_input
    from model.quant import quantize_network

    ref = reference_dir / "darknet-tiny96"
    net = load_darknet(ref / "ref-tiny.cfg", ref / "ref-tiny.weights")
    x, _ = prepare_input(ref / "dog.png", net.input_shape)
    return quantize_network(net, [x]), quantize_input(x)
