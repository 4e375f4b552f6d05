"""Host side of one engine layer test: the memory image, the golden expectation, random layers.

The DDR layouts are the engine's memory contract, :mod:`firmware.layout`.
"""

from dataclasses import dataclass, field

import numpy as np

from firmware.layout import fm_to_ddr, params_to_ddr, weights_to_ddr
from hdl.descriptor import Pool, plan_layer
from model.golden import conv2d_int, maxpool_int, requantize

__all__ = [
    "LayerCase",
    "layer_image",
    "random_case",
]

_ALIGN = 4096


def _ceil(a, b):
    return -(-a // b)


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
