"""Host side of one engine layer: DDR layouts, the memory image, the golden expectation.

The layouts are the contract with the compiler (``docs/engine.md``, "DDR layouts"):

- feature map (int8): ``[ceil(C/8)][H][W][8]``, channels zero-padded to a multiple of 8;
- int32 output: ``[ceil(O/8)][H][W][8]`` int32 little-endian (four 64-bit beats per pixel);
- weights: ``[ceil(O/P_oc)][ceil(C/8)][K*K][P_oc][8]`` int8, zero-padded channels;
- requant table: per output channel (padded to a multiple of P_oc) two 64-bit words:
  ``bias | shift << 32`` and ``m_pos | m_neg << 16``.
"""

from dataclasses import dataclass, field

import numpy as np

from hdl.descriptor import Pool, plan_layer
from model.golden import conv2d_int, maxpool_int, requantize

__all__ = [
    "LayerCase",
    "fm_from_ddr",
    "fm_to_ddr",
    "layer_image",
    "params_to_ddr",
    "random_case",
    "weights_to_ddr",
]

_ALIGN = 4096


def _ceil(a, b):
    return -(-a // b)


def fm_to_ddr(x, group=8):
    """Feature map ``(C, H, W)`` → bytes in the ``[C/8][H][W][8]`` layout (any integer dtype)."""
    c, h, w = x.shape
    padded = np.zeros((_ceil(c, group) * group, h, w), dtype=x.dtype)
    padded[:c] = x
    return padded.reshape(-1, group, h, w).transpose(0, 2, 3, 1).astype(x.dtype.newbyteorder("<"))\
        .tobytes()


def fm_from_ddr(raw, shape, dtype=np.int8, group=8):
    """Inverse of :func:`fm_to_ddr`: ``raw`` bytes → array ``shape`` = (C, H, W) of ``dtype``."""
    c, h, w = shape
    groups = _ceil(c, group)
    arr = np.frombuffer(bytes(raw), dtype=np.dtype(dtype).newbyteorder("<"))
    arr = arr[:groups * h * w * group].reshape(groups, h, w, group).transpose(0, 3, 1, 2)
    return arr.reshape(groups * group, h, w)[:c].astype(dtype)


def weights_to_ddr(w, p_ic, p_oc):
    """Weights ``(O, C, K, K)`` int8 → bytes in the engine's streaming order."""
    o, c, k, _ = w.shape
    og, ig = _ceil(o, p_oc), _ceil(c, p_ic)
    padded = np.zeros((og * p_oc, ig * p_ic, k, k), dtype=np.int8)
    padded[:o, :c] = w
    # (OG, P_oc, IG, P_ic, K, K) -> (OG, IG, K, K, P_oc, P_ic)
    return padded.reshape(og, p_oc, ig, p_ic, k, k).transpose(0, 2, 4, 5, 1, 3).tobytes()


def params_to_ddr(bias, m_pos, m_neg, shift, p_oc):
    """Requant table: two little-endian 64-bit words per output channel, padded to ``p_oc``."""
    o = len(bias)
    n = _ceil(o, p_oc) * p_oc
    words = np.zeros((n, 2), dtype=np.uint64)
    words[o:, 0] = np.uint64(1) << np.uint64(32)  # padded channels: shift 1, all else 0 -> out 0
    words[:o, 0] = (np.asarray(bias, np.int64) & 0xFFFFFFFF).astype(np.uint64) \
        | (np.asarray(shift, np.uint64) << np.uint64(32))
    words[:o, 1] = np.asarray(m_pos, np.uint64) | (np.asarray(m_neg, np.uint64) << np.uint64(16))
    return words.astype("<u8").tobytes()


@dataclass
class LayerCase:
    """One convolution layer's integer parameters and input (stride 1, padding ``kernel // 2``).

    ``pool`` is a :class:`hdl.descriptor.Pool`; ``out_int32`` writes accumulators (§7).
    """

    name: str
    x: np.ndarray  # int8 (C, H, W)
    w: np.ndarray  # int8 (O, C, K, K)
    bias: np.ndarray  # int32 (O,)
    m_pos: np.ndarray
    m_neg: np.ndarray
    shift: np.ndarray
    pool: Pool = Pool.NONE
    out_int32: bool = False
    max_tile_rows: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def kernel(self):
        return self.w.shape[2]

    def expected(self):
        """The golden model's output: int8 (pooled) or int32 accumulators."""
        acc = conv2d_int(self.x, self.w, self.bias, 1, self.kernel // 2)
        if self.out_int32:
            return acc.astype(np.int32)
        y = requantize(acc, self.m_pos, self.m_neg, self.shift)
        if self.pool == Pool.P2S2:
            return maxpool_int(y, 2, 2, 1)
        if self.pool == Pool.P2S1:
            return maxpool_int(y, 2, 1, 1)
        return y

    @property
    def macs(self):
        """Useful multiply-accumulates ``O·C·K·K·H·W``: real channels only; every kernel tap
        counts, also those on the zero padding (the usual convention for MAC utilization)."""
        o, c, k, _ = self.w.shape
        _, h, w = self.x.shape
        return o * c * k * k * h * w


def layer_image(case, cfg):
    """Lay one case out in memory.

    Returns
    -------
    (segments, plan, out_addr, out_bytes)
        ``segments`` is a list of ``(address, bytes)``; ``plan`` a
        :class:`hdl.descriptor.LayerPlan`.
    """
    fm = fm_to_ddr(case.x)
    wts = weights_to_ddr(case.w, cfg.p_ic, cfg.p_oc)
    prm = params_to_ddr(case.bias, case.m_pos, case.m_neg, case.shift, cfg.p_oc)
    in_addr = _ALIGN
    w_addr = in_addr + _ceil(len(fm), _ALIGN) * _ALIGN
    param_addr = w_addr + _ceil(len(wts), _ALIGN) * _ALIGN
    out_addr = param_addr + _ceil(len(prm), _ALIGN) * _ALIGN
    plan = plan_layer(cfg, case.x.shape, case.w.shape[0], case.kernel, case.pool, case.out_int32,
                      in_addr=in_addr, out_addr=out_addr, w_addr=w_addr, param_addr=param_addr,
                      max_tile_rows=case.max_tile_rows)
    oh, ow = plan.out_hw
    out_bytes = _ceil(case.w.shape[0], 8) * 8 * oh * ow * (4 if case.out_int32 else 1)
    return [(in_addr, fm), (w_addr, wts), (param_addr, prm)], plan, out_addr, out_bytes


def random_case(rng, name, c, h, w, o, kernel, pool=Pool.NONE, out_int32=False,
                max_tile_rows=None, extreme=False):
    """A random layer: uniform int8 inputs, weights in [-127, 127], multipliers and shifts drawn
    so outputs spread over the int8 range, with both saturation ends hit; ``extreme`` draws
    multipliers and shifts at their limits (0, 65535, shift 1 and 47) too."""
    x = rng.integers(-128, 128, size=(c, h, w), dtype=np.int8)
    wt = rng.integers(-127, 128, size=(o, c, kernel, kernel), dtype=np.int8)
    bias = rng.integers(-(1 << 16), 1 << 16, size=o).astype(np.int32)
    # |acc| ~ sqrt(C·K·K)·127·74: pick shift so the typical output lands near ±64.
    typical = np.sqrt(c * kernel * kernel) * 127 * 74
    shift = np.full(o, int(np.clip(np.ceil(np.log2(typical * 65535 / 64)), 1, 47)), np.int64)
    m_pos = rng.integers(1, 65536, size=o).astype(np.int64)
    m_neg = (m_pos // 10).astype(np.int64)
    if extreme:
        m_pos[::3] = 65535
        m_neg[1::3] = 0
        m_neg[2::4] = 65535
        shift[::5] = 1
        shift[1::5] = 47
        bias[::7] = (1 << 24) - 1
        bias[1::7] = -(1 << 24)
    return LayerCase(name, x, wt, bias, m_pos, m_neg, shift, Pool(pool), out_int32,
                     max_tile_rows)
