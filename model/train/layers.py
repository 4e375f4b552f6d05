"""Forward and backward passes of the trainable layers, derived by hand.

Every function works on a batch in **NHWC** order, ``x.shape == (B, H, W, C)``: the channel axis
last lets im2col produce ``(B·Ho·Wo, C·K·K)`` patches with a plain reshape and lets the GEMM
output land in NHWC without a transpose. Weights keep darknet's OIHW order, so the patch columns
are ordered ``(c, ky, kx)`` exactly like a flattened darknet filter.

The functions are dtype-generic: training runs in float32, the gradient checks in float64.
Each ``*_forward`` returns the output and a cache; the matching ``*_backward`` takes the
gradient of the loss with respect to the output and returns the gradients with respect to
the inputs and parameters. Gradients are of the loss (``+dL/dθ``), not darknet's ``delta``
(which is ``-dL/dθ``); the optimizer handles the sign.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "BN_EPS",
    "LEAKY_SLOPE",
    "batchnorm_backward",
    "batchnorm_forward",
    "conv_backward",
    "conv_forward",
    "leaky_backward",
    "leaky_forward",
    "maxpool_backward",
    "maxpool_forward",
    "route_backward",
    "route_forward",
    "upsample_backward",
    "upsample_forward",
]

#: Darknet adds epsilon *outside* the square root in the forward normalization:
#: ``(x - mean) / (sqrt(var) + .000001f)``. Ref: darknet src/blas.c ``normalize_cpu``.
BN_EPS = 1e-6

#: Leaky ReLU slope. Ref: darknet src/activations.h ``leaky_activate``.
LEAKY_SLOPE = 0.1


def _im2col(x: np.ndarray, size: int, stride: int, pad: int) -> np.ndarray:
    """Patches of a zero-padded NHWC batch.

    Returns an array of shape (B, Ho, Wo, C·size·size) with columns ordered (c, ky, kx).
    Ref: darknet src/im2col.c ``im2col_cpu`` (zero padding, same output size rule).
    """
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    win = sliding_window_view(xp, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    b, ho, wo = win.shape[:3]
    return win.reshape(b, ho, wo, -1)


def conv_forward(x: np.ndarray, w: np.ndarray, stride: int, pad: int):
    """Convolution without bias, as darknet's im2col + GEMM.

    Parameters
    ----------
    x : array, shape (B, H, W, C)
    w : array, shape (O, C, K, K)
        OIHW, darknet's storage order.
    stride, pad : int
        ``pad`` zeros on every side; ``Ho = (H + 2·pad - K) // stride + 1`` as darknet.

    Returns
    -------
    y : array, shape (B, Ho, Wo, O)
    cache : tuple
        Everything :func:`conv_backward` needs.
    """
    cols = _im2col(x, w.shape[2], stride, pad)
    y = cols @ w.reshape(w.shape[0], -1).T
    return y, (cols, x.shape, stride, pad)


def conv_backward(dy: np.ndarray, cache, w: np.ndarray):
    """Gradients of :func:`conv_forward`.

    Parameters
    ----------
    dy : array, shape (B, Ho, Wo, O)
    cache : from :func:`conv_forward`
    w : array, shape (O, C, K, K)

    Returns
    -------
    dx : array, shape (B, H, W, C)
    dw : array, shape (O, C, K, K)
    """
    cols, xshape, stride, pad = cache
    o, c, k, _ = w.shape
    b, ho, wo, _ = dy.shape
    dy2 = dy.reshape(-1, o)
    dw = (dy2.T @ cols.reshape(-1, c * k * k)).reshape(w.shape)
    dcols = (dy2 @ w.reshape(o, -1)).reshape(b, ho, wo, c, k, k)
    # col2im: scatter each kernel tap back; taps overlap, so accumulate (darknet col2im_cpu adds).
    h, wd = xshape[1], xshape[2]
    dxp = np.zeros((b, h + 2 * pad, wd + 2 * pad, c), dtype=dy.dtype)
    for ky in range(k):
        for kx in range(k):
            dxp[:, ky : ky + stride * ho : stride, kx : kx + stride * wo : stride] += dcols[
                ..., ky, kx
            ]
    dx = dxp[:, pad : pad + h, pad : pad + wd] if pad else dxp
    return dx, dw


def batchnorm_forward(z: np.ndarray):
    """Batch normalization in training mode (without scale and shift).

    Statistics are over the batch and both spatial axes; the variance is the **unbiased**
    one, ``Σ(z - mean)² / (N - 1)``, used both to normalize and for the rolling update, exactly
    as darknet (Ref: darknet src/blas.c ``variance_cpu``, src/batchnorm_layer.c
    ``forward_batchnorm_layer``). The normalization is darknet's CPU
    ``(z - mean) / (sqrt(var) + 1e-6)``.

    Parameters
    ----------
    z : array, shape (B, H, W, C)

    Returns
    -------
    xhat : array, shape (B, H, W, C)
    mean, var : arrays, shape (C,)
        Batch mean and unbiased batch variance (for the caller's rolling update).
    cache : tuple
    """
    n = z.shape[0] * z.shape[1] * z.shape[2]
    mean = z.mean(axis=(0, 1, 2))
    d = z - mean
    var = (d * d).sum(axis=(0, 1, 2)) / (n - 1)
    sigma = np.sqrt(var)
    denom = sigma + BN_EPS
    xhat = d / denom
    return xhat, mean, var, (d, sigma, denom, n)


def batchnorm_backward(dxhat: np.ndarray, cache) -> np.ndarray:
    """Exact gradient of :func:`batchnorm_forward`.

    With ``d = z - mean``, ``σ = sqrt(Σd²/(N-1))`` and ``D = σ + 1e-6``:
    ``dz = (g - mean(g)) / D - d · Σ(g·d) / (D² · σ · (N - 1))``.

    Darknet's backward (src/blas.c ``mean_delta_cpu``, ``variance_delta_cpu``,
    ``normalize_delta_cpu``) is *not* the derivative of its forward: it uses
    ``sqrt(var + 1e-5)`` instead of ``sqrt(var) + 1e-6`` and ``2·d/N`` instead of ``2·d/(N-1)``.
    Both differences are O(1e-5) and O(1/N) relative; we keep the exact gradient of the forward
    we compute so that the loss we report and the gradient we follow agree (and so the gradient
    check holds to 1e-6).

    Parameters
    ----------
    dxhat : array, shape (B, H, W, C)
    cache : from :func:`batchnorm_forward`

    Returns
    -------
    dz : array, shape (B, H, W, C)
    """
    d, sigma, denom, n = cache
    gbar = dxhat.mean(axis=(0, 1, 2))
    gd = (dxhat * d).sum(axis=(0, 1, 2))
    return (dxhat - gbar) / denom - d * (gd / (denom * denom * sigma * (n - 1)))


def leaky_forward(x: np.ndarray) -> np.ndarray:
    """Leaky ReLU with slope 0.1. Ref: darknet src/activations.h ``leaky_activate``."""
    return np.where(x > 0, x, LEAKY_SLOPE * x)


def leaky_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`leaky_forward` evaluated from its *output* ``y``, as darknet does.

    Ref: darknet src/activations.h ``leaky_gradient`` (``(x > 0) ? 1 : .1`` on the output).
    """
    return np.where(y > 0, dy, LEAKY_SLOPE * dy)


def maxpool_forward(x: np.ndarray, size: int, stride: int, padding: int):
    """Darknet max pooling.

    The window of output ``(i, j)`` starts at ``(i·stride - padding//2, j·stride - padding//2)``;
    positions outside the map are ``-inf`` and never win. ``Ho = (H + padding - size)//stride + 1``.
    So 2×2/2 with padding 1 halves the map, 2×2/1 with padding 1 pads bottom/right and keeps it.
    Ties go to the **first** maximum in row-major window order (darknet compares with ``>``).
    Ref: darknet src/maxpool_layer.c ``forward_maxpool_layer``.

    Parameters
    ----------
    x : array, shape (B, H, W, C)
    size, stride, padding : int

    Returns
    -------
    y : array, shape (B, Ho, Wo, C)
    cache : tuple
        The winning tap per output (int array, shape (B, Ho, Wo, C)) and the geometry.
    """
    b, h, w, c = x.shape
    ho = (h + padding - size) // stride + 1
    wo = (w + padding - size) // stride + 1
    off = padding // 2
    # Pad enough on the far side for the last window; the padded cells are -inf.
    hp = (ho - 1) * stride + size
    wp = (wo - 1) * stride + size
    xp = np.full((b, hp, wp, c), -np.inf, dtype=x.dtype)
    hh = min(h, hp - off)
    ww = min(w, wp - off)
    xp[:, off : off + hh, off : off + ww] = x[:, :hh, :ww]
    win = sliding_window_view(xp, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    win = win.reshape(b, ho, wo, c, size * size)
    arg = win.argmax(axis=-1)  # np.argmax returns the first maximum, like darknet's strict '>'
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    return y, (arg, x.shape, size, stride, off, hp, wp)


def maxpool_backward(dy: np.ndarray, cache) -> np.ndarray:
    """Gradient of :func:`maxpool_forward`: each output's gradient goes to its winning input.

    Overlapping windows (stride < size) accumulate. Ref: darknet src/maxpool_layer.c
    ``backward_maxpool_layer`` (``net.delta[index] += l.delta[i]``).

    Parameters
    ----------
    dy : array, shape (B, Ho, Wo, C)

    Returns
    -------
    dx : array, shape (B, H, W, C)
    """
    arg, xshape, size, stride, off, hp, wp = cache
    b, h, w, c = xshape
    ho, wo = dy.shape[1:3]
    dxp = np.zeros((b, hp, wp, c), dtype=dy.dtype)
    for ky in range(size):
        for kx in range(size):
            tap = np.where(arg == ky * size + kx, dy, 0)
            dxp[:, ky : ky + stride * ho : stride, kx : kx + stride * wo : stride] += tap
    hh = min(h, hp - off)
    ww = min(w, wp - off)
    dx = np.zeros(xshape, dtype=dy.dtype)
    dx[:, :hh, :ww] = dxp[:, off : off + hh, off : off + ww]
    return dx


def route_forward(xs: list[np.ndarray]) -> np.ndarray:
    """Darknet's route: the sources concatenated in channel order.

    Ref: darknet src/route_layer.c ``forward_route_layer``.

    Parameters
    ----------
    xs : list of arrays, shapes (B, H, W, C_i)

    Returns
    -------
    y : array, shape (B, H, W, ΣC_i)
    """
    return np.concatenate(xs, axis=-1)


def route_backward(dy: np.ndarray, channels: list[int]) -> list[np.ndarray]:
    """Gradient of :func:`route_forward`: each source gets its channels' slice of ``dy``.

    Ref: darknet src/route_layer.c ``backward_route_layer`` (an ``axpy`` per source: the slice
    is *added* to the source's delta, which other consumers may have written too).

    Parameters
    ----------
    dy : array, shape (B, H, W, ΣC_i)
    channels : list of int
        ``C_i`` per source.

    Returns
    -------
    list of arrays, shapes (B, H, W, C_i)
    """
    return np.split(dy, np.cumsum(channels)[:-1], axis=-1)


def upsample_forward(x: np.ndarray, stride: int) -> np.ndarray:
    """Nearest-neighbour upsampling: ``y[b, i, j, c] = x[b, i // stride, j // stride, c]``.

    Ref: darknet src/blas.c ``upsample_cpu`` (forward, ``scale`` 1).

    Parameters
    ----------
    x : array, shape (B, H, W, C)
    stride : int

    Returns
    -------
    y : array, shape (B, H·stride, W·stride, C)
    """
    return np.repeat(np.repeat(x, stride, axis=1), stride, axis=2)


def upsample_backward(dy: np.ndarray, stride: int) -> np.ndarray:
    """Gradient of :func:`upsample_forward`: each input sums its ``stride × stride`` block.

    Ref: darknet src/upsample_layer.c ``backward_upsample_layer`` (``upsample_cpu`` with
    ``forward = 0`` accumulates the block into the input's delta).

    Parameters
    ----------
    dy : array, shape (B, H·stride, W·stride, C)

    Returns
    -------
    dx : array, shape (B, H, W, C)
    """
    b, hs, ws, c = dy.shape
    return dy.reshape(b, hs // stride, stride, ws // stride, stride, c).sum(axis=(2, 4))
