"""Float32 reference forward pass that reproduces darknet's CPU path.

Every function follows the arithmetic of pjreddie darknet (CPU build, ``-Ofast`` without ``-march``,
so no fused multiply-add) operation by operation, including where C promotes ``float`` to
``double``. With ``exact=True`` (the default) the convolution accumulates its products in darknet's
GEMM order and the whole pass is bit-identical to darknet on the shared reference network; with
``exact=False`` it uses numpy's BLAS matmul, about 5x faster and within a few float32 ulps.
(One difference remains possible in principle: ``-Ofast`` also flushes subnormal floats to zero,
numpy does not; values that small do not occur in practice.)

All activations are CHW float32 arrays (batch dimension dropped).
"""

from __future__ import annotations

import math

import numpy as np

from model.network import (
    ConvLayer,
    MaxpoolLayer,
    Network,
    RegionLayer,
    RouteLayer,
    UpsampleLayer,
    YoloLayer,
    conv_output_hw,
    maxpool_output_hw,
)
from model.windows import im2col, max_pool, pool_offset

__all__ = [
    "batchnorm",
    "conv2d",
    "conv2d_naive",
    "fold_batchnorm",
    "forward",
    "leaky",
    "maxpool",
    "maxpool_naive",
    "region_forward",
    "route",
    "upsample",
    "upsample_naive",
    "yolo_forward",
    "yolo_forward_naive",
]

_F32 = np.float32
_F64 = np.float64
_FLT_MAX = np.finfo(np.float32).max
# darknet's ``.000001f``: the float32 constant, promoted to double in ``normalize_cpu``.
_BN_EPS_F32 = _F64(_F32(1e-6))


def _gemm_darknet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float32, summing over ``k`` strictly in order from 0, one rounding per step.

    Ref: darknet src/gemm.c ``gemm_nn``: ``C[i][j] += A[i][k] * B[k][j]`` with ``k`` in the middle
    loop, so every output is ``((0 + a0*b0) + a1*b1) + ...`` with each product and each sum
    rounded to float32 (no FMA in the reference build).

    Parameters
    ----------
    a : float32 array, shape (M, K)
    b : float32 array, shape (K, N)

    Returns
    -------
    float32 array, shape (M, N)
    """
    m, k = a.shape
    out = np.zeros((m, b.shape[1]), _F32)
    product = np.empty_like(out)
    a_columns = np.ascontiguousarray(a.T)[:, :, None]  # (K, M, 1): column k of a, broadcastable
    for i in range(k):
        np.multiply(a_columns[i], b[i], out=product)
        out += product
    return out


def conv2d(
    x: np.ndarray, w: np.ndarray, stride: int, padding: int, exact: bool = True
) -> np.ndarray:
    """Darknet convolution without bias: im2col then GEMM, in float32.

    Parameters
    ----------
    x : float32 array, shape (C, H, W)
    w : float32 array, shape (O, C, K, K)
    stride, padding : int
        Zero padding on every side.
    exact : bool
        True: darknet's summation order (bit-identical to darknet's CPU ``gemm``). False: BLAS
        matmul (faster; differs by float32 rounding only).

    Returns
    -------
    float32 array, shape (O, out_h, out_w)
        ``out_h, out_w = conv_output_hw(H, W, K, stride, padding)``.
        Ref: darknet src/convolutional_layer.c ``forward_convolutional_layer``.
    """
    o, c, k, _ = w.shape
    if x.shape[0] != c:
        raise ValueError(f"input has {x.shape[0]} channels, weights expect {c}")
    out_h, out_w = conv_output_hw(x.shape[1], x.shape[2], k, stride, padding)
    cols = im2col(np.asarray(x, _F32), k, stride, padding)
    a = np.asarray(w, _F32).reshape(o, c * k * k)
    out = _gemm_darknet(a, cols) if exact else a @ cols
    return out.reshape(o, out_h, out_w)


def batchnorm(
    x: np.ndarray,
    scales: np.ndarray,
    biases: np.ndarray,
    rolling_mean: np.ndarray,
    rolling_variance: np.ndarray,
) -> np.ndarray:
    """Darknet's inference batch norm, then scale and bias.

    ``y = float((x - mean) / (sqrt((double)var) + .000001f)) * scale + bias``: the subtraction in
    float32, the division in double (C promotes it, since ``sqrt`` returns double), then float32
    ``scale_bias`` and ``add_bias``.
    Ref: darknet src/batchnorm_layer.c ``forward_batchnorm_layer``; src/blas.c ``normalize_cpu``;
    src/convolutional_layer.c ``scale_bias``, ``add_bias``.

    Parameters
    ----------
    x : float32 array, shape (O, H, W)
    scales, biases, rolling_mean, rolling_variance : float32 arrays, shape (O,)

    Returns
    -------
    float32 array, shape (O, H, W)
    """
    centred = (np.asarray(x, _F32) - _chan(rolling_mean)).astype(_F64)
    denom = np.sqrt(np.asarray(rolling_variance, _F32).astype(_F64)) + _BN_EPS_F32
    normalized = (centred / denom[:, None, None]).astype(_F32)
    return normalized * _chan(scales) + _chan(biases)


def _chan(v: np.ndarray) -> np.ndarray:
    """A per-channel float32 vector (O,) broadcastable against (O, H, W)."""
    return np.asarray(v, _F32)[:, None, None]


def leaky(x: np.ndarray) -> np.ndarray:
    """Darknet's leaky ReLU on a float32 array of any shape.

    ``x > 0 ? x : .1*x`` where ``.1`` is a double literal, so the negative branch is
    ``float(0.1 * (double)x)``; ``0.1f * x`` would differ in the last bit for about 20% of
    negative inputs. Ref: darknet src/activations.h ``leaky_activate``.
    """
    x = np.asarray(x, _F32)
    return np.where(x > 0, x, (0.1 * x.astype(_F64)).astype(_F32))


def fold_batchnorm(layer: ConvLayer) -> tuple[np.ndarray, np.ndarray]:
    """Fold a conv layer's batch norm into its weights and bias, in float64.

    Exactly ``docs/fixed-point.md`` section 2::

        w'[o] = w[o] * scale[o] / (sqrt(var[o]) + 1e-6)
        b'[o] = bias[o] - mean[o] * scale[o] / (sqrt(var[o]) + 1e-6)

    evaluated left to right in float64. Without batch norm, ``w' = w`` and ``b' = bias``.

    Returns
    -------
    w_folded : float64 array, shape (O, C, K, K)
    b_folded : float64 array, shape (O,)
    """
    w = np.asarray(layer.weights, _F64)
    bias = np.asarray(layer.biases, _F64)
    if not layer.batch_normalize:
        return w.copy(), bias.copy()
    scale = np.asarray(layer.scales, _F64)
    mean = np.asarray(layer.rolling_mean, _F64)
    denom = np.sqrt(np.asarray(layer.rolling_variance, _F64)) + 1e-6
    w_folded = w * scale[:, None, None, None] / denom[:, None, None, None]
    b_folded = bias - mean * scale / denom
    return w_folded, b_folded


def _conv_layer(x: np.ndarray, layer: ConvLayer, exact: bool) -> np.ndarray:
    # Ref: darknet src/convolutional_layer.c ``forward_convolutional_layer``.
    y = conv2d(x, layer.weights, layer.stride, layer.padding, exact)
    if layer.batch_normalize:
        y = batchnorm(y, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance)
    else:
        y = y + _chan(layer.biases)
    if layer.activation == "leaky":
        return leaky(y)
    if layer.activation == "linear":
        return y
    raise ValueError(f"unsupported activation {layer.activation!r}")


def maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Darknet max pooling.

    Parameters
    ----------
    x : float32 array, shape (C, H, W)
    size, stride : int
    padding : int
        Darknet's total padding (its default is ``size - 1``). Positions outside the map read as
        ``-FLT_MAX``, so a size-2 stride-1 pool keeps the map size, padding bottom/right only.

    Returns
    -------
    float32 array, shape (C, out_h, out_w)
        ``out = (in + padding - size) // stride + 1``.
        Ref: darknet src/maxpool_layer.c ``forward_maxpool_layer``.
    """
    return max_pool(np.asarray(x, _F32), size, stride, padding, -_FLT_MAX)


def conv2d_naive(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Loop oracle for :func:`conv2d` (small shapes only).

    One explicit float32 multiply, then add, per tap, in darknet's order ``(c, ky, kx)``, so it
    equals ``conv2d(..., exact=True)`` bit for bit. Padding taps are skipped: darknet adds their
    ``w * 0 = +-0``, which leaves a sum started at ``+0`` unchanged.

    Parameters
    ----------
    x : float32 array, shape (C, H, W)
    w : float32 array, shape (O, C, K, K)

    Returns
    -------
    float32 array, shape (O, out_h, out_w)
    """
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    out_h, out_w = conv_output_hw(h, wd, k, stride, padding)
    out = np.zeros((o, out_h, out_w), _F32)
    for f in range(o):
        for oy in range(out_h):
            for ox in range(out_w):
                acc = _F32(0)
                for ch in range(c):
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = oy * stride + ky - padding, ox * stride + kx - padding
                            if 0 <= iy < h and 0 <= ix < wd:
                                acc = _F32(acc + _F32(w[f, ch, ky, kx] * x[ch, iy, ix]))
                out[f, oy, ox] = acc
    return out


def maxpool_naive(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Loop oracle for :func:`maxpool` (small shapes only), written as darknet's loops.

    Returns
    -------
    float32 array, shape (C, out_h, out_w)
    """
    c, h, w = x.shape
    out_h, out_w = maxpool_output_hw(h, w, size, stride, padding)
    offset = pool_offset(padding)
    out = np.empty((c, out_h, out_w), _F32)
    for ch in range(c):
        for i in range(out_h):
            for j in range(out_w):
                best = -_FLT_MAX
                for n in range(size):
                    for m in range(size):
                        y, xx = i * stride + n - offset, j * stride + m - offset
                        val = x[ch, y, xx] if 0 <= y < h and 0 <= xx < w else -_FLT_MAX
                        best = val if val > best else best
                out[ch, i, j] = best
    return out


def _logistic(x: np.ndarray) -> np.ndarray:
    """``1./(1. + exp(-x))`` in double, stored as float32. Ref: darknet src/activations.h."""
    return (1.0 / (1.0 + np.exp(-np.asarray(x, _F64)))).astype(_F32)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Darknet's softmax over axis 0 of a float32 array.

    ``e = exp(x - largest)`` (subtraction in float32, ``exp`` in double, stored as float32), the
    sum accumulated in float32 in class order, then ``e * (1 / sum)`` in float32: darknet's
    ``output /= sum`` divides by a loop invariant, which ``-Ofast`` (``-freciprocal-math``) turns
    into one reciprocal and a multiply -- measured: only this form matches the reference data bit
    for bit. Ref: darknet src/blas.c ``softmax``; Makefile ``OPTS=-Ofast``.
    """
    largest = x.max(axis=0)
    e = np.exp((x - largest).astype(_F64)).astype(_F32)
    total = np.zeros_like(largest)
    for row in e:  # sequential float32 sum, as darknet's loop
        total += row
    return e * (_F32(1) / total)


def region_forward(x: np.ndarray, layer: RegionLayer) -> np.ndarray:
    """Darknet's region layer forward (inference).

    Parameters
    ----------
    x : float32 array, shape (num * (coords + 1 + classes), H, W)
        The last convolution's output. For anchor ``n``, entry ``e`` (0..3 box, 4 objectness,
        5.. classes) lives at channel ``n * (coords + 1 + classes) + e`` (darknet ``entry_index``).

    Returns
    -------
    float32 array, same shape
        Logistic on x, y and objectness; softmax over the classes of each anchor and cell (or
        logistic when ``softmax`` is off); w and h pass through.
        Ref: darknet src/region_layer.c ``forward_region_layer``.
    """
    x = np.asarray(x, _F32)
    entries = layer.coords + 1 + layer.classes
    if x.shape[0] != layer.num * entries:
        raise ValueError(f"region input has {x.shape[0]} channels, expected {layer.num * entries}")
    out = x.copy().reshape(layer.num, entries, *x.shape[1:])
    out[:, 0:2] = _logistic(out[:, 0:2])
    out[:, layer.coords] = _logistic(out[:, layer.coords])
    classes = out[:, layer.coords + 1 :]
    if layer.softmax:
        out[:, layer.coords + 1 :] = _softmax(np.moveaxis(classes, 1, 0)).swapaxes(0, 1)
    else:
        out[:, layer.coords + 1 :] = _logistic(classes)
    return out.reshape(x.shape)


def route(outputs: list[np.ndarray], layers: tuple[int, ...]) -> np.ndarray:
    """Darknet's route: the listed layers' outputs concatenated in channel order.

    Parameters
    ----------
    outputs : list of arrays, shapes (C_i, H, W), any one dtype
        Every earlier layer's output, indexed as darknet indexes layers.
    layers : tuple of int
        Absolute indices of the sources (:attr:`model.network.RouteLayer.layers`).

    Returns
    -------
    array, shape (sum C_i, H, W), the sources' dtype
        Ref: darknet src/route_layer.c ``forward_route_layer`` (one ``copy_cpu`` per source, each
        after the previous one's channels).
    """
    return np.concatenate([outputs[i] for i in layers], axis=0)


def upsample(x: np.ndarray, stride: int) -> np.ndarray:
    """Darknet's nearest-neighbour upsampling (its ``scale`` is 1, a no-op multiply).

    Parameters
    ----------
    x : array, shape (C, H, W), any dtype (the golden model upsamples int8 with it)
    stride : int

    Returns
    -------
    array, shape (C, H * stride, W * stride), the dtype of ``x``
        ``out[c, y, x] = in[c, y // stride, x // stride]``.
        Ref: darknet src/blas.c ``upsample_cpu``.
    """
    return np.repeat(np.repeat(x, stride, axis=1), stride, axis=2)


def upsample_naive(x: np.ndarray, stride: int) -> np.ndarray:
    """Loop oracle for :func:`upsample`, darknet's ``upsample_cpu`` loops on flat indices."""
    c, h, w = x.shape
    flat_in = np.ravel(x)
    out = np.empty(c * h * stride * w * stride, x.dtype)
    for k in range(c):
        for j in range(h * stride):
            for i in range(w * stride):
                in_index = k * w * h + (j // stride) * w + i // stride
                out_index = k * w * h * stride * stride + j * w * stride + i
                out[out_index] = flat_in[in_index]
    return out.reshape(c, h * stride, w * stride)


def yolo_forward(x: np.ndarray, layer: YoloLayer) -> np.ndarray:
    """Darknet's yolo layer forward (inference).

    Parameters
    ----------
    x : float32 array, shape (len(mask) * (4 + 1 + classes), H, W)
        The producing convolution's output; box ``n``'s entry ``e`` (0..3 box, 4 objectness,
        5.. classes) at channel ``n * (4 + 1 + classes) + e`` (darknet ``entry_index``).

    Returns
    -------
    float32 array, same shape
        Logistic on x, y, objectness and every class score (independent logistics, no softmax);
        w and h pass through raw. Ref: darknet src/yolo_layer.c ``forward_yolo_layer``.
    """
    x = np.asarray(x, _F32)
    entries = 4 + 1 + layer.classes
    if x.shape[0] != len(layer.mask) * entries:
        raise ValueError(f"yolo input has {x.shape[0]} channels, expected "
                         f"{len(layer.mask) * entries}")
    out = x.copy().reshape(len(layer.mask), entries, *x.shape[1:])
    out[:, 0:2] = _logistic(out[:, 0:2])
    out[:, 4:] = _logistic(out[:, 4:])
    return out.reshape(x.shape)


def yolo_forward_naive(x: np.ndarray, layer: YoloLayer) -> np.ndarray:
    """Loop oracle for :func:`yolo_forward`: darknet's two ``activate_array`` calls per box, on
    flat indices, with ``math.exp``."""
    _, h, w = x.shape
    flat = np.array(x, _F32).ravel()
    entries = 4 + 1 + layer.classes
    for n in range(len(layer.mask)):
        for start, count in ((0, 2 * w * h), (4 * w * h, (1 + layer.classes) * w * h)):
            base = n * entries * w * h + start  # entry_index(l, 0, n*w*h, entry)
            for i in range(base, base + count):
                flat[i] = _F32(1.0 / (1.0 + math.exp(-float(flat[i]))))
    return flat.reshape(x.shape)


def forward(net: Network, x: np.ndarray, exact: bool = True) -> list[np.ndarray]:
    """Run ``net`` on one input, as darknet's ``network_predict`` does on the CPU.

    Parameters
    ----------
    net : Network
    x : float array, shape ``net.input_shape``
        E.g. the letterboxed image (:func:`model.image.letterbox`), values in [0, 1].
    exact : bool
        Darknet's summation order in the convolutions (see :func:`conv2d`).

    Returns
    -------
    list of float32 arrays
        ``outputs[i]`` is layer ``i``'s output, shape ``net.layers[i].out_shape``.
    """
    x = np.asarray(x, _F32)
    if x.shape != tuple(net.input_shape):
        raise ValueError(f"input shape {x.shape} != network input shape {net.input_shape}")
    outputs = []
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            x = _conv_layer(x, layer, exact)
        elif isinstance(layer, MaxpoolLayer):
            x = maxpool(x, layer.size, layer.stride, layer.padding)
        elif isinstance(layer, RegionLayer):
            x = region_forward(x, layer)
        elif isinstance(layer, RouteLayer):
            x = route(outputs, layer.layers)
        elif isinstance(layer, UpsampleLayer):
            x = upsample(x, layer.stride)
        elif isinstance(layer, YoloLayer):
            x = yolo_forward(x, layer)
        else:
            raise TypeError(f"unsupported layer {type(layer).__name__}")
        outputs.append(x)
    return outputs
