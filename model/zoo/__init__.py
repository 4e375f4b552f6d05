"""Built-in models and images shipped with Owlet (see README.md beside this file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.network import ConvLayer, Network

__all__ = [
    "DEFAULT_CFG",
    "DEFAULT_IMAGE",
    "DEFAULT_WEIGHTS",
    "OWLET_TINY_CFG",
    "TINY_YOLO_VOC_CFG",
    "ZOO_DIR",
    "random_weights",
]

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_CFG = ZOO_DIR / "ref-tiny.cfg"
DEFAULT_WEIGHTS = ZOO_DIR / "ref-tiny.weights"
DEFAULT_IMAGE = ZOO_DIR / "dog.png"
TINY_YOLO_VOC_CFG = ZOO_DIR / "yolov2-tiny-voc.cfg"
#: Owlet's detector for the built-in synthetic task (``make train`` trains it).
OWLET_TINY_CFG = ZOO_DIR / "owlet-tiny.cfg"


def random_weights(net: Network, seed: int = 0) -> Network:
    """Fill every convolution of ``net`` with seeded random weights, in place.

    He-scaled normal weights and mild batch-norm statistics keep activations in a realistic range
    through a deep network, so calibration and benchmarks behave as with trained weights.

    Returns
    -------
    Network
        ``net`` itself.
    """
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if not isinstance(layer, ConvLayer):
            continue
        fan_in = layer.in_shape[0] * layer.size * layer.size
        shape = (layer.filters, layer.in_shape[0], layer.size, layer.size)
        layer.weights = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        layer.biases = rng.normal(0.0, 0.1, layer.filters).astype(np.float32)
        if layer.batch_normalize:
            layer.scales = rng.uniform(0.5, 1.5, layer.filters).astype(np.float32)
            layer.rolling_mean = rng.normal(0.0, 0.1, layer.filters).astype(np.float32)
            layer.rolling_variance = rng.uniform(0.5, 2.0, layer.filters).astype(np.float32)
    return net
