"""The integer golden model: the arithmetic the RTL must reproduce bit for bit.

Every function here is the executable form of a rule in ``docs/fixed-point.md``. Integer operations
are spelled the way the hardware does them (multiply, add the rounding constant, arithmetic shift,
saturate). Each fast, vectorized function has a naive-loop oracle next to it (suffix ``_naive``)
written independently with Python integers; the tests hold them equal.

Shapes are ``(C, H, W)`` for feature maps and ``(O, C, K, K)`` for weights.
"""

from __future__ import annotations

import numpy as np

from model.float_ref import region_forward, route, upsample, yolo_forward
from model.network import maxpool_output_hw
from model.windows import im2col, max_pool, pool_offset

__all__ = [
    "ACC_BITS",
    "INT8_MAX",
    "INT8_MIN",
    "INPUT_SCALE",
    "conv2d_int",
    "conv2d_int_naive",
    "dequantize_output",
    "forward_int",
    "host_region",
    "host_yolo",
    "maxpool_int",
    "maxpool_int_naive",
    "quantize_input",
    "requantize",
    "requantize_naive",
]

INT8_MIN, INT8_MAX = -128, 127
ACC_BITS = 32
#: The network input in [0, 1] is quantized with this fixed scale (docs/fixed-point.md §1).
INPUT_SCALE = 1.0 / 127.0

# float32 adds integers exactly while every partial sum stays below 2**24. With
# |w_q * x_q| <= 127 * 128 = 16256, any 1024 products sum to at most 16 646 144 < 2**24, whatever
# order BLAS adds them in. So the GEMM runs in float32 over chunks of at most this many products.
_EXACT_FLOAT32_TERMS = 1024


def quantize_input(x: np.ndarray) -> np.ndarray:
    """Quantize the letterboxed network input (docs/fixed-point.md §1).

    Parameters
    ----------
    x : float array, shape (C, H, W), values in [0, 1]

    Returns
    -------
    int8 array, shape (C, H, W): ``clamp(floor(x * 127 + 0.5), 0, 127)`` computed in float64.
    """
    q = np.floor(np.asarray(x, dtype=np.float64) * 127.0 + 0.5)
    return np.clip(q, 0, INT8_MAX).astype(np.int8)


def conv2d_int(
    x_q: np.ndarray, w_q: np.ndarray, bias: np.ndarray, stride: int, padding: int
) -> np.ndarray:
    """Integer convolution plus bias: the accumulators of docs/fixed-point.md §3.

    Parameters
    ----------
    x_q : int8 array, shape (C, H, W)
    w_q : int8 array, shape (O, C, K, K), values in [-127, 127]
    bias : int32 array, shape (O,)
    stride, padding : int
        Zero padding (the integer 0) on every side.

    Returns
    -------
    int64 array, shape (O, H_out, W_out)
        ``acc = bias + sum(w_q * x_q)``, exact. The caller checks it fits ``ACC_BITS``.

    Raises
    ------
    ValueError
        If x's channel count is not w's ``C``; the message gives both shapes.
    """
    o, c, k, _ = w_q.shape
    if x_q.shape[0] != c:
        raise ValueError(f"conv2d_int: x has {x_q.shape[0]} channels (shape {x_q.shape}), w has "
                         f"{c} input channels (shape {w_q.shape})")
    h_out = (x_q.shape[1] + 2 * padding - k) // stride + 1
    w_out = (x_q.shape[2] + 2 * padding - k) // stride + 1
    cols = im2col(x_q.astype(np.float32), k, stride, padding)
    wmat = w_q.reshape(o, c * k * k).astype(np.float32)
    acc = np.zeros((o, h_out * w_out), dtype=np.int64)
    for start in range(0, c * k * k, _EXACT_FLOAT32_TERMS):
        stop = start + _EXACT_FLOAT32_TERMS
        acc += (wmat[:, start:stop] @ cols[start:stop]).astype(np.int64)
    acc += bias.astype(np.int64)[:, None]
    return acc.reshape(o, h_out, w_out)


def conv2d_int_naive(
    x_q: np.ndarray, w_q: np.ndarray, bias: np.ndarray, stride: int, padding: int
) -> np.ndarray:
    """Loop oracle for :func:`conv2d_int` (same contract), Python integers throughout."""
    o_ch, c_ch, k, _ = w_q.shape
    _, h, w = x_q.shape
    h_out = (h + 2 * padding - k) // stride + 1
    w_out = (w + 2 * padding - k) // stride + 1
    out = np.zeros((o_ch, h_out, w_out), dtype=np.int64)
    for o in range(o_ch):
        for y in range(h_out):
            for x in range(w_out):
                total = int(bias[o])
                for c in range(c_ch):
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = y * stride + ky - padding, x * stride + kx - padding
                            if 0 <= iy < h and 0 <= ix < w:
                                total += int(w_q[o, c, ky, kx]) * int(x_q[c, iy, ix])
                out[o, y, x] = total
    return out


def requantize(
    acc: np.ndarray, m_pos: np.ndarray, m_neg: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Requantize accumulators to int8 with the activation folded in (docs/fixed-point.md §4).

    Parameters
    ----------
    acc : integer array, shape (O, ...)
        Accumulators, ``|acc| < 2**31``.
    m_pos, m_neg : integer arrays, shape (O,), values in [0, 65535]
        Multiplier for ``acc >= 0`` and for ``acc < 0`` (leaky: about a tenth of ``m_pos``).
    shift : integer array, shape (O,), values in [1, 47]

    Returns
    -------
    int8 array, shape of ``acc``: ``clamp((acc * m + 2**(shift-1)) >> shift, -128, 127)``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    extra = (1,) * (acc.ndim - 1)
    m_pos = np.asarray(m_pos, dtype=np.int64).reshape(-1, *extra)
    m_neg = np.asarray(m_neg, dtype=np.int64).reshape(-1, *extra)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, *extra)
    # In place on one int64 buffer: the products stay below 2**47, so int64 is exact.
    product = np.where(acc < 0, m_neg, m_pos)
    product *= acc
    product += np.int64(1) << (shift - 1)
    product >>= shift  # arithmetic shift on int64: floor, hence round half up
    np.clip(product, INT8_MIN, INT8_MAX, out=product)
    return product.astype(np.int8)


def requantize_naive(
    acc: np.ndarray, m_pos: np.ndarray, m_neg: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Loop oracle for :func:`requantize`, written as round-half-up of an exact rational."""
    acc = np.asarray(acc)
    out = np.zeros(acc.shape, dtype=np.int8)
    for index in np.ndindex(acc.shape):
        o = index[0]
        a = int(acc[index])
        m = int(m_neg[o]) if a < 0 else int(m_pos[o])
        divisor = 2 ** int(shift[o])
        # floor(a*m/divisor + 1/2) == floor((2*a*m + divisor) / (2*divisor)), exactly.
        y = (2 * a * m + divisor) // (2 * divisor)
        out[index] = min(max(y, INT8_MIN), INT8_MAX)
    return out


def maxpool_int(x_q: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Darknet maxpool on int8 feature maps (docs/fixed-point.md §5).

    Parameters
    ----------
    x_q : int8 array, shape (C, H, W)
    size, stride, padding : int
        Darknet's maxpool parameters (``padding`` defaults to ``size - 1`` in the cfg).

    Returns
    -------
    int8 array, shape (C, H_out, W_out)
        Positions outside the map never win: they read as -128, which cannot exceed the window's
        real positions.
    """
    return max_pool(np.asarray(x_q, np.int8), size, stride, padding, INT8_MIN)


def maxpool_int_naive(x_q: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Loop oracle for :func:`maxpool_int`: the max over in-range positions only."""
    c, h, w = x_q.shape
    h_out, w_out = maxpool_output_hw(h, w, size, stride, padding)
    offset = -pool_offset(padding)
    out = np.zeros((c, h_out, w_out), dtype=np.int8)
    for ch in range(c):
        for y in range(h_out):
            for x in range(w_out):
                best = None
                for ky in range(size):
                    for kx in range(size):
                        iy, ix = y * stride + offset + ky, x * stride + offset + kx
                        if 0 <= iy < h and 0 <= ix < w:
                            v = int(x_q[ch, iy, ix])
                            best = v if best is None else max(best, v)
                out[ch, y, x] = best
    return out


def dequantize_output(layer, acc: np.ndarray) -> np.ndarray:
    """Host-side dequantization of the last layer's int32 output (docs/fixed-point.md §7).

    Parameters
    ----------
    layer : QuantConv with ``output_int32``
    acc : integer array, shape (O, H, W)

    Returns
    -------
    float32 array, shape (O, H, W): ``acc · s_w[o] · s_x`` computed in float64.
    """
    scale = np.asarray(layer.w_scale, dtype=np.float64) * layer.in_scale
    return (acc.astype(np.float64) * scale[:, None, None]).astype(np.float32)


def host_region(producer, region, acc: np.ndarray) -> np.ndarray:
    """The region layer, run on the host on the last convolution's int32 accumulators.

    Parameters
    ----------
    producer : QuantConv with ``output_int32``, the layer feeding the region layer
    region : RegionLayer
    acc : integer array, shape (O, H, W)

    Returns
    -------
    float32 array, shape (O, H, W): darknet's region output (logistic, softmax) of the
    dequantized accumulators.
    """
    return region_forward(dequantize_output(producer, acc), region)


def host_yolo(producer, yolo, acc: np.ndarray) -> np.ndarray:
    """A yolo layer, run on the host on its producing convolution's int32 accumulators.

    Parameters
    ----------
    producer : QuantConv with ``output_int32``, the layer feeding the yolo layer
    yolo : YoloLayer
    acc : integer array, shape (O, H, W)

    Returns
    -------
    float32 array, shape (O, H, W): darknet's yolo output (logistic on x, y, objectness and the
    classes; w, h raw) of the dequantized accumulators.
    """
    return yolo_forward(dequantize_output(producer, acc), yolo)


def forward_int(qnet, x_q: np.ndarray) -> list[np.ndarray]:
    """Run a quantized network on an int8 input, layer by layer as darknet indexes them.

    Parameters
    ----------
    qnet : QuantizedNetwork
    x_q : int8 array, shape ``qnet.input_shape`` (see :func:`quantize_input`)

    Returns
    -------
    list of arrays, one per layer
        int8 (C, H, W) for convolutions, maxpools, routes and upsamples; int32 accumulators for
        a convolution feeding a head (or the last one); for a region or yolo layer, its float32
        output computed on the host from the dequantized accumulators (logistic/softmax as
        darknet), since it is not part of the engine.

    Raises
    ------
    OverflowError
        If an accumulator leaves the 32-bit range (the quantizer's bound makes this impossible).
    """
    outputs: list[np.ndarray] = []
    x = x_q
    for index, layer in enumerate(qnet.layers):
        if layer.kind == "convolutional":
            acc = conv2d_int(x, layer.weight, layer.bias, layer.stride, layer.padding)
            limit = 1 << (ACC_BITS - 1)
            if acc.min() < -limit or acc.max() >= limit:
                raise OverflowError(f"layer {index}: accumulator outside {ACC_BITS} bits")
            if layer.output_int32:
                x = acc.astype(np.int32)
            else:
                x = requantize(acc, layer.m_pos, layer.m_neg, layer.shift)
        elif layer.kind == "maxpool":
            x = maxpool_int(x, layer.size, layer.stride, layer.padding)
        elif layer.kind == "region":
            x = host_region(qnet.layers[index - 1], layer.layer, x)
        elif layer.kind == "route":
            # Memory layout, not arithmetic: the sources share one scale (docs/fixed-point.md §8)
            # and sit side by side in one buffer, so the consumer reads their int8 values as is.
            x = route(outputs, layer.layers)
        elif layer.kind == "upsample":
            x = upsample(x, layer.stride)  # int8 copies: the scale is unchanged
        elif layer.kind == "yolo":
            x = host_yolo(qnet.layers[index - 1], layer.layer, x)
        else:
            raise ValueError(f"layer {index}: unknown layer kind {layer.kind!r}")
        outputs.append(x)
    return outputs
