"""Central finite differences, the oracle the hand-written gradients are checked against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["numeric_grad", "rel_err"]


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
