"""Central finite differences, the oracle the hand-written gradients are checked against, and a
tiny network exercising every trainable layer kind for such checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.network import ConvLayer, MaxpoolLayer, Network, RegionLayer

__all__ = ["make_region", "numeric_grad", "rel_err", "small_network"]


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


def small_network(rng: np.random.Generator, num: int = 2, classes: int = 3) -> Network:
    """An 8×8×3-input network with every layer kind, float64 random parameters.

    conv 3x3 BN leaky (4) -> maxpool 2/2 -> conv 3x3 BN leaky (5) -> maxpool 2/1 (padded) ->
    conv 1x1 linear -> region (4×4 grid, ``num`` anchors, ``classes`` classes).
    """
    def conv(cin, cout, hw, k, bn, act):
        return ConvLayer(
            in_shape=(cin, hw, hw), out_shape=(cout, hw, hw), filters=cout, size=k, stride=1,
            padding=k // 2, batch_normalize=bn, activation=act,
            weights=rng.normal(0, 0.5, size=(cout, cin, k, k)), biases=rng.normal(0, 0.1, cout),
            scales=rng.uniform(0.5, 1.5, cout) if bn else None,
            rolling_mean=np.zeros(cout) if bn else None,
            rolling_variance=np.ones(cout) if bn else None,
        )

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
