"""Sliding-window geometry shared by the float reference and the integer golden model.

Convolution and maxpool both read ``size × size`` windows of a ``(C, H, W)`` map. These helpers
are dtype-preserving, so the same code unfolds float32 activations and int8 ones.
"""

from __future__ import annotations

import numpy as np

from model.network import conv_output_hw, maxpool_output_hw

__all__ = ["im2col", "max_pool", "pool_offset", "window_tap"]


def window_tap(a: np.ndarray, dy: int, dx: int, stride: int, out_h: int, out_w: int) -> np.ndarray:
    """Tap ``(dy, dx)`` of every window of a padded map, as a strided view.

    Parameters
    ----------
    a : array, shape (C, H, W)
    dy, dx, stride, out_h, out_w : int

    Returns
    -------
    view of ``a``, shape (C, out_h, out_w): ``a[:, i * stride + dy, j * stride + dx]``.
    """
    return a[
        :, dy : dy + stride * (out_h - 1) + 1 : stride, dx : dx + stride * (out_w - 1) + 1 : stride
    ]


def im2col(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Unfold the convolution windows of ``x`` into columns.

    Parameters
    ----------
    x : array, shape (C, H, W)
    size, stride, padding : int
        Square kernel, stride and zero padding on every side (darknet convention).

    Returns
    -------
    array of ``x``'s dtype, shape (C * size * size, out_h * out_w)
        Row ``(c * size + ky) * size + kx``, column ``oy * out_w + ox`` holds
        ``x[c, oy * stride + ky - padding, ox * stride + kx - padding]`` (0 outside the map).
        The row order is the OIHW weight layout flattened. Ref: darknet src/im2col.c.
    """
    c, h, w = x.shape
    out_h, out_w = conv_output_hw(h, w, size, stride, padding)
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((c, size, size, out_h, out_w), x.dtype)
    # One strided copy per kernel tap: far faster than transposing a sliding-window view.
    for ky in range(size):
        for kx in range(size):
            cols[:, ky, kx] = window_tap(xp, ky, kx, stride, out_h, out_w)
    return cols.reshape(c * size * size, out_h * out_w)


def pool_offset(padding: int) -> int:
    """How far before the map a maxpool window starts: ``padding // 2``.

    Ref: darknet src/maxpool_layer.c (``-l.pad/2``; padding is non-negative, so C's truncating
    division and Python's floor division agree).
    """
    return padding // 2


def max_pool(x: np.ndarray, size: int, stride: int, padding: int, lowest) -> np.ndarray:
    """Darknet max pooling in ``x``'s dtype.

    Parameters
    ----------
    x : array, shape (C, H, W)
    size, stride : int
    padding : int
        Darknet's total padding (its default is ``size - 1``); the window of output ``(i, j)``
        starts at ``(i * stride - offset, j * stride - offset)`` with ``offset = padding // 2``.
    lowest : scalar
        A value no real position is below (``-FLT_MAX`` in float, -128 in int8): positions outside
        the map read as it, so they never win.

    Returns
    -------
    array of ``x``'s dtype, shape (C, out_h, out_w), ``out = (in + padding - size) // stride + 1``.
    Ref: darknet src/maxpool_layer.c ``forward_maxpool_layer``.
    """
    c, h, w = x.shape
    out_h, out_w = maxpool_output_hw(h, w, size, stride, padding)
    offset = pool_offset(padding)
    span_h, span_w = (out_h - 1) * stride + size, (out_w - 1) * stride + size
    framed = np.full((c, span_h, span_w), lowest, x.dtype)
    rows, cols = max(0, min(h, span_h - offset)), max(0, min(w, span_w - offset))
    framed[:, offset : offset + rows, offset : offset + cols] = x[:, :rows, :cols]
    out = np.full((c, out_h, out_w), lowest, x.dtype)
    for dy in range(size):
        for dx in range(size):
            np.maximum(out, window_tap(framed, dy, dx, stride, out_h, out_w), out=out)
    return out
