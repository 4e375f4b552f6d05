"""Built-in models and images shipped with Owlet (see README.md beside this file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.network import ConvLayer, Network

__all__ = [
    "DEFAULT_CFG",
    "DEFAULT_IMAGE",
    "DEFAULT_QMODEL",
    "DEFAULT_WEIGHTS",
    "DOG_IMAGE",
    "OWLET_TINY_CFG",
    "OWLET_YOLO3_CFG",
    "REFERENCE_CFG",
    "REFERENCE_WEIGHTS",
    "MODELS",
    "TINY_YOLO_VOC_CFG",
    "YOLOV3_TINY_CFG",
    "YOLOV3_TINY_DIR",
    "YOLOV3_TINY_NAMES",
    "YOLOV3_TINY_WEIGHTS",
    "ZOO_DIR",
    "ZooModel",
    "find_model",
    "random_weights",
]

ZOO_DIR = Path(__file__).resolve().parent
#: Owlet's detector for the built-in synthetic task: ``make train`` produces these files.
OWLET_TINY_CFG = ZOO_DIR / "owlet-tiny.cfg"
DEFAULT_CFG = OWLET_TINY_CFG
DEFAULT_WEIGHTS = ZOO_DIR / "owlet-tiny.weights"
DEFAULT_QMODEL = ZOO_DIR / "owlet-tiny.npz"
#: The YOLOv3-tiny-style detector for the same task (two yolo heads): ``make train-yolo3``.
OWLET_YOLO3_CFG = ZOO_DIR / "owlet-yolo3.cfg"
#: A held-out synthetic test image (64×64 scaled ×4).
DEFAULT_IMAGE = ZOO_DIR / "shapes.png"
#: The reduced tiny-YOLOv2 of tests/data/darknet-tiny96 and its image.
REFERENCE_CFG = ZOO_DIR / "ref-tiny.cfg"
REFERENCE_WEIGHTS = ZOO_DIR / "ref-tiny.weights"
DOG_IMAGE = ZOO_DIR / "dog.png"
TINY_YOLO_VOC_CFG = ZOO_DIR / "yolov2-tiny-voc.cfg"
#: The published COCO YOLOv3-tiny: too large for the repository, ``make weights`` fetches it here
#: (``model.zoo.fetch``).
YOLOV3_TINY_DIR = ZOO_DIR.parent.parent / "build" / "weights" / "yolov3-tiny"
YOLOV3_TINY_CFG = YOLOV3_TINY_DIR / "yolov3-tiny.cfg"
YOLOV3_TINY_WEIGHTS = YOLOV3_TINY_DIR / "yolov3-tiny.weights"
YOLOV3_TINY_NAMES = YOLOV3_TINY_DIR / "coco.names"


@dataclass(frozen=True)
class ZooModel:
    """A named network of the zoo: what ``owlet ... --model NAME`` selects.

    Attributes
    ----------
    name : str
    cfg, weights : Path
    names : Path or None
        Class names, one per line (None: ``<cfg stem>.names`` beside the cfg, if any).
    image : Path
        The image its demonstrations and reports run on by default.
    fetched : bool
        The files come from ``make weights`` rather than the repository.
    """

    name: str
    cfg: Path
    weights: Path
    names: Path | None
    image: Path
    fetched: bool = False

    def check(self) -> ZooModel:
        """``self`` if its files exist, else FileNotFoundError saying how to get them."""
        for path in (self.cfg, self.weights, self.names):
            if path is not None and not path.is_file():
                hint = "run `make weights`" if self.fetched else "the repository is incomplete"
                raise FileNotFoundError(f"model {self.name}: {path} is missing; {hint}")
        return self


MODELS = {
    model.name: model
    for model in (
        ZooModel("owlet-tiny", OWLET_TINY_CFG, DEFAULT_WEIGHTS, None, DEFAULT_IMAGE),
        ZooModel("owlet-yolo3", OWLET_YOLO3_CFG, OWLET_YOLO3_CFG.with_suffix(".weights"), None,
                 DEFAULT_IMAGE),
        ZooModel("ref-tiny", REFERENCE_CFG, REFERENCE_WEIGHTS, None, DOG_IMAGE),
        ZooModel("yolov3-tiny", YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS, YOLOV3_TINY_NAMES,
                 DOG_IMAGE, fetched=True),
    )
}


def find_model(name: str) -> ZooModel:
    """The zoo entry called ``name``, its files checked (see :meth:`ZooModel.check`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}' (the zoo has: {', '.join(MODELS)})")
    return MODELS[name].check()


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
