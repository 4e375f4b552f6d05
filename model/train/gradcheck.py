"""Central finite differences, the oracle the hand-written gradients are checked against, and tiny
networks exercising every trainable layer kind for such checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.network import (
    ConvLayer,
    MaxpoolLayer,
    Network,
    RegionLayer,
    RouteLayer,
    UpsampleLayer,
    YoloLayer,
)

__all__ = [
    "SMALL_YOLO_ANCHORS",
    "make_region",
    "make_yolo",
    "numeric_grad",
    "rel_err",
    "small_network",
    "small_yolo_network",
]


def numeric_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences ``(f(x + h) - f(x - h)) / 2h`` of a scalar ``f()`` per entry of ``x``.

    ``x`` is perturbed in place (and restored), so ``f`` reads it by reference.

    Parameters
    ----------
    f : callable returning float
    x : float64 array, any shape
    h : float

    Returns
    -------
    g : array, same shape as ``x``
    """
    g = np.zeros_like(x)
    flat = x.reshape(-1)  # a view: writes reach x
    if not np.shares_memory(flat, x):
        raise ValueError("numeric_grad needs a contiguous array to perturb in place")
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b| / (|a| + |b|)`` with 2-norms (0 when both vanish)."""
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den > 0 else 0.0


def make_region(h, w, num, classes, anchors, **options) -> RegionLayer:
    """A softmax region layer on an ``h × w`` grid; ``options`` are its training keys."""
    c = num * (5 + classes)
    return RegionLayer(
        in_shape=(c, h, w), out_shape=(c, h, w), anchors=np.array(anchors, float).reshape(num, 2),
        classes=classes, coords=4, num=num, softmax=True,
        options={k: str(v) for k, v in options.items()},
    )


def make_yolo(h, w, mask, classes, anchors, **options) -> YoloLayer:
    """A yolo head on an ``h × w`` grid predicting anchors ``mask`` of ``anchors`` (pixels, flat
    ``w, h`` pairs); ``options`` are its training keys."""
    c = len(mask) * (5 + classes)
    return YoloLayer(
        in_shape=(c, h, w), out_shape=(c, h, w), anchors=np.array(anchors, float).reshape(-1, 2),
        mask=tuple(mask), classes=classes, options={k: str(v) for k, v in options.items()},
    )


def _conv(rng, cin, cout, hw, k, bn, act) -> ConvLayer:
    """A stride-1 'same' convolution on an ``hw × hw`` map with random float64 parameters."""
    return ConvLayer(
        in_shape=(cin, hw, hw), out_shape=(cout, hw, hw), filters=cout, size=k, stride=1,
        padding=k // 2, batch_normalize=bn, activation=act,
        weights=rng.normal(0, 0.5, size=(cout, cin, k, k)), biases=rng.normal(0, 0.1, cout),
        scales=rng.uniform(0.5, 1.5, cout) if bn else None,
        rolling_mean=np.zeros(cout) if bn else None,
        rolling_variance=np.ones(cout) if bn else None,
    )


def small_network(rng: np.random.Generator, num: int = 2, classes: int = 3) -> Network:
    """An 8×8×3-input network with every layer kind, float64 random parameters.

    conv 3x3 BN leaky (4) -> maxpool 2/2 -> conv 3x3 BN leaky (5) -> maxpool 2/1 (padded) ->
    conv 1x1 linear -> region (4×4 grid, ``num`` anchors, ``classes`` classes).
    """
    def conv(cin, cout, hw, k, bn, act):
        return _conv(rng, cin, cout, hw, k, bn, act)

    nout = num * (5 + classes)
    layers = [
        conv(3, 4, 8, 3, True, "leaky"),
        MaxpoolLayer((4, 8, 8), (4, 4, 4), 2, 2, 1),
        conv(4, 5, 4, 3, True, "leaky"),
        MaxpoolLayer((5, 4, 4), (5, 4, 4), 2, 1, 1),
        conv(5, nout, 4, 1, False, "linear"),
        make_region(4, 4, num, classes, [1, 1, 2.5, 2], object_scale=5, rescore=1, bias_match=1,
                    thresh=0.6),
    ]
    return Network(input_shape=(3, 8, 8), layers=layers)


#: Anchors of :func:`small_yolo_network`, pixels of its 8×8 input.
SMALL_YOLO_ANCHORS = [1.5, 1.5, 2.5, 3, 4, 4, 6, 5]


def small_yolo_network(rng: np.random.Generator, classes: int = 2) -> Network:
    """An 8×8×3-input YOLOv3-tiny in miniature, float64 random parameters.

    ::

        0 conv 3x3 BN leaky (4) @8   1 maxpool 2/2     2 conv 3x3 BN leaky (5) @4
        3 maxpool 2/2               4 conv 3x3 BN leaky (6) @2
        5 conv 1x1 linear           6 yolo (2×2 grid, anchors 2, 3)
        7 route 4                   8 conv 1x1 BN leaky (3) @2    9 upsample ×2 -> 4×4
        10 route 9, 2 (3 + 5 channels)
        11 conv 1x1 linear          12 yolo (4×4 grid, anchors 0, 1)

    Layer 4 feeds both a convolution and a route, layer 2 both a maxpool and a route, as in
    YOLOv3-tiny, so their gradients add up from two consumers.
    """
    nout = 2 * (5 + classes)
    layers = [
        _conv(rng, 3, 4, 8, 3, True, "leaky"),
        MaxpoolLayer((4, 8, 8), (4, 4, 4), 2, 2, 1),
        _conv(rng, 4, 5, 4, 3, True, "leaky"),
        MaxpoolLayer((5, 4, 4), (5, 2, 2), 2, 2, 1),
        _conv(rng, 5, 6, 2, 3, True, "leaky"),
        _conv(rng, 6, nout, 2, 1, False, "linear"),
        make_yolo(2, 2, (2, 3), classes, SMALL_YOLO_ANCHORS, ignore_thresh=0.3),
        RouteLayer((6, 2, 2), (6, 2, 2), (4,)),
        _conv(rng, 6, 3, 2, 1, True, "leaky"),
        UpsampleLayer((3, 2, 2), (3, 4, 4), 2),
        RouteLayer((8, 4, 4), (8, 4, 4), (9, 2)),
        _conv(rng, 8, nout, 4, 1, False, "linear"),
        make_yolo(4, 4, (0, 1), classes, SMALL_YOLO_ANCHORS, ignore_thresh=0.3),
    ]
    return Network(input_shape=(3, 8, 8), layers=layers)
