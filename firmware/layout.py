"""The engine's DDR memory contract: how feature maps, weights and requant tables are laid out.

These byte layouts are what the engine's loaders read and its writer produces
(``docs/engine.md``, "DDR layouts"); the compiler writes them, the host driver and the reference
executor read them back. Every ``*_to_ddr`` has its inverse ``*_from_ddr`` here.

- **Feature map** (int8 or int32): ``[ceil(C/g)][H][W][g]`` with ``g`` channels per group (the
  engine's ``p_ic``, 8 by default), channels zero-padded to a multiple of ``g``, little-endian.
  An int8 pixel group is one 64-bit beat; an int32 group is four.
- **Weights** (int8): ``[ceil(O/P_oc)][ceil(C/P_ic)][K*K][P_oc][P_ic]``, zero-padded channels:
  the order in which the weight loader streams them into the MAC array.
- **Tap-packed input** (a first layer of fewer channels than ``P_ic``, docs/engine.md, "Tap
  packing"): the feature-map layout of :func:`pack_taps`'s ``C·K·K``-channel map, which a 1x1
  convolution with :func:`pack_tap_weights` turns into the layer's ``K × K`` convolution.
- **Requant table**: per output channel (padded to a multiple of ``P_oc``) two little-endian
  64-bit words, ``bias | shift << 32`` and ``m_pos | m_neg << 16``. Padded channels hold shift 1
  and zeros elsewhere, so they requantize to 0 (docs/fixed-point.md).
"""

from __future__ import annotations

import numpy as np

from model.windows import im2col

__all__ = [
    "fm_from_ddr",
    "fm_to_ddr",
    "pack_tap_weights",
    "pack_taps",
    "params_from_ddr",
    "params_to_ddr",
    "weights_from_ddr",
    "weights_to_ddr",
]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def fm_to_ddr(x: np.ndarray, group: int = 8) -> bytes:
    """Feature map → bytes in the ``[C/g][H][W][g]`` layout.

    Parameters
    ----------
    x : integer array, shape (C, H, W)
    group : channels per group ``g``

    Returns
    -------
    bytes, ``ceil(C/g) * g * H * W * x.itemsize`` long
    """
    c, h, w = x.shape
    padded = np.zeros((_ceil(c, group) * group, h, w), dtype=x.dtype)
    padded[:c] = x
    little = x.dtype.newbyteorder("<")
    return padded.reshape(-1, group, h, w).transpose(0, 2, 3, 1).astype(little).tobytes()


def fm_from_ddr(raw, shape: tuple[int, int, int], dtype=np.int8, group: int = 8) -> np.ndarray:
    """Inverse of :func:`fm_to_ddr`.

    Parameters
    ----------
    raw : bytes-like, at least ``ceil(C/g) * g * H * W * itemsize`` bytes (extra bytes ignored)
    shape : (C, H, W)

    Returns
    -------
    array of ``dtype``, shape (C, H, W): the padded channels are dropped
    """
    c, h, w = shape
    groups = _ceil(c, group)
    arr = np.frombuffer(bytes(raw), dtype=np.dtype(dtype).newbyteorder("<"))
    arr = arr[:groups * h * w * group].reshape(groups, h, w, group).transpose(0, 3, 1, 2)
    return arr.reshape(groups * group, h, w)[:c].astype(dtype)


def pack_taps(x: np.ndarray, kernel: int) -> np.ndarray:
    """The ``kernel × kernel`` 'same' neighbourhood of every pixel, as channels.

    Channel ``(c·K + ky)·K + kx`` of pixel ``(y, x)`` is input channel ``c`` at
    ``(y + ky - K//2, x + kx - K//2)``, zero outside the map (the engine's pad value, 0): the
    rows of :func:`model.windows.im2col`, one column per pixel. A 1x1 convolution of this map
    with :func:`pack_tap_weights` sums the same products as the ``K × K`` convolution of ``x``:
    the first layer's 3 channels fill 27 of 32 lanes in 4 passes instead of 3 of 8 in 9.

    Parameters
    ----------
    x : integer array, shape (C, H, W)
    kernel : odd int ``K``

    Returns
    -------
    array of ``x.dtype``, shape (K·K·C, H, W)
    """
    c, h, w = x.shape
    return im2col(x, kernel, 1, kernel // 2).reshape(c * kernel * kernel, h, w)


def pack_tap_weights(w: np.ndarray) -> np.ndarray:
    """The 1x1 weights that read :func:`pack_taps`'s map as ``w`` reads the plain one.

    Parameters
    ----------
    w : int8 array, shape (O, C, K, K)

    Returns
    -------
    int8 array, shape (O, C·K·K, 1, 1): input channel ``(c·K + ky)·K + kx`` is ``w[:, c, ky, kx]``
    """
    o, c, k, _ = w.shape
    return w.reshape(o, c * k * k, 1, 1)


def weights_to_ddr(w: np.ndarray, p_ic: int, p_oc: int) -> bytes:
    """Weights → bytes in the engine's streaming order.

    Parameters
    ----------
    w : int8 array, shape (O, C, K, K)

    Returns
    -------
    bytes, ``ceil(O/p_oc)*p_oc * ceil(C/p_ic)*p_ic * K*K`` long
    """
    o, c, k, _ = w.shape
    og, ig = _ceil(o, p_oc), _ceil(c, p_ic)
    padded = np.zeros((og * p_oc, ig * p_ic, k, k), dtype=np.int8)
    padded[:o, :c] = w
    # (OG, P_oc, IG, P_ic, K, K) -> (OG, IG, K, K, P_oc, P_ic)
    return padded.reshape(og, p_oc, ig, p_ic, k, k).transpose(0, 2, 4, 5, 1, 3).tobytes()


def weights_from_ddr(raw, out_channels: int, in_channels: int, kernel: int, p_ic: int,
                     p_oc: int) -> np.ndarray:
    """Inverse of :func:`weights_to_ddr` for padded channel counts.

    Parameters
    ----------
    raw : bytes-like, ``out_channels * in_channels * kernel**2`` bytes
    out_channels, in_channels : int
        Multiples of ``p_oc`` and ``p_ic``.

    Returns
    -------
    int8 array, shape (out_channels, in_channels, kernel, kernel)
    """
    og, ig = out_channels // p_oc, in_channels // p_ic
    stream = np.frombuffer(bytes(raw), np.int8).reshape(og, ig, kernel, kernel, p_oc, p_ic)
    # (OG, IG, K, K, P_oc, P_ic) -> (OG, P_oc, IG, P_ic, K, K)
    return stream.transpose(0, 4, 1, 5, 2, 3).reshape(out_channels, in_channels, kernel, kernel)


def params_to_ddr(bias, m_pos, m_neg, shift, p_oc: int) -> bytes:
    """Requant table → two little-endian 64-bit words per output channel, padded to ``p_oc``.

    Parameters
    ----------
    bias : int32, shape (O,)
    m_pos, m_neg : uint16 values, shape (O,)
    shift : values in [1, 47], shape (O,)

    Returns
    -------
    bytes, ``16 * ceil(O/p_oc) * p_oc`` long
    """
    o = len(bias)
    n = _ceil(o, p_oc) * p_oc
    words = np.zeros((n, 2), dtype=np.uint64)
    words[o:, 0] = np.uint64(1) << np.uint64(32)  # padded channels: shift 1, all else 0 -> out 0
    words[:o, 0] = (np.asarray(bias, np.int64) & 0xFFFFFFFF).astype(np.uint64) \
        | (np.asarray(shift, np.uint64) << np.uint64(32))
    words[:o, 1] = np.asarray(m_pos, np.uint64) | (np.asarray(m_neg, np.uint64) << np.uint64(16))
    return words.astype("<u8").tobytes()


def params_from_ddr(raw, channels: int) -> tuple[np.ndarray, ...]:
    """Inverse of :func:`params_to_ddr`.

    Returns
    -------
    bias : int32 array, shape (channels,)
    m_pos, m_neg, shift : int64 arrays, shape (channels,)
    """
    words = np.frombuffer(bytes(raw), "<u8").reshape(channels, 2)
    bias = (words[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    shift = (words[:, 0] >> np.uint64(32)).astype(np.int64)
    m_pos = (words[:, 1] & np.uint64(0xFFFF)).astype(np.int64)
    m_neg = (words[:, 1] >> np.uint64(16)).astype(np.int64)
    return bias, m_pos, m_neg, shift
