"""Host side of one engine layer test: the memory image, the golden expectation, random layers.

The DDR layouts are the engine's memory contract, :mod:`firmware.layout`. :func:`fuzz_case` is
the fuzz's draw: which layer configurations the random tests run, and why.
"""

from dataclasses import dataclass

import numpy as np

from firmware.layout import fm_to_ddr, params_to_ddr, weights_to_ddr
from hdl.descriptor import Buffering, EngineConfig, LayerPlan, Pool, plan_layer
from model.golden import conv2d_int, maxpool_int, requantize

__all__ = [
    "FILL",
    "GUARD_BYTES",
    "LayerCase",
    "LayerImage",
    "fuzz_case",
    "guard_pattern",
    "layer_image",
    "random_case",
    "tile_width_limits",
]

_PAGE = 4096
#: The byte every unused address holds before a layer runs (also the stale output region).
FILL = 0xA5
#: Guard bands before and after the output region: a 4 KB page each, so that a burst that
#: crossed a page boundary it should have split at lands in one.
GUARD_BYTES = _PAGE


def _ceil(a, b):
    return -(-a // b)


def guard_pattern(n):
    """The guard bands' content: ``n`` bytes that count up in steps of 0x1D from 0x3C, so that
    neither the general :data:`FILL` nor a constant write reproduces them."""
    return ((0x3C + 0x1D * np.arange(n)) & 0xFF).astype(np.uint8).tobytes()


@dataclass
class LayerCase:
    """One convolution layer's integer parameters and input (stride 1, padding ``kernel // 2``).

    ``pool`` is a :class:`hdl.descriptor.Pool`; ``out_int32`` writes accumulators (§7);
    ``upsample`` writes the int8, un-pooled output nearest-upsampled x2 (``docs/engine.md``);
    ``max_tile_rows`` caps the planner's tile height (forces multi-tile maps); ``addr_offset``
    (a multiple of 8) moves every region off its 4 KB page start, so that bursts split at 4 KB
    boundaries in other places; ``buffering`` forces the planner's input-buffer mode.
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
    addr_offset: int = 0
    upsample: bool = False
    buffering: Buffering | None = None

    @property
    def kernel(self):
        return self.w.shape[2]

    def expected(self):
        """The golden model's output: int8 (pooled, or upsampled: each pixel repeated over its
        2x2 block) or int32 accumulators."""
        acc = conv2d_int(self.x, self.w, self.bias, 1, self.kernel // 2)
        if self.out_int32:
            return acc.astype(np.int32)
        y = requantize(acc, self.m_pos, self.m_neg, self.shift)
        if self.pool == Pool.P2S2:
            return maxpool_int(y, 2, 2, 1)
        if self.pool == Pool.P2S1:
            return maxpool_int(y, 2, 1, 1)
        if self.upsample:
            return np.repeat(np.repeat(y, 2, axis=1), 2, axis=2)
        return y

    @property
    def macs(self):
        """Useful multiply-accumulates ``O·C·K·K·H·W``: real channels only; every kernel tap
        counts, also those on the zero padding (the usual convention for MAC utilization)."""
        o, c, k, _ = self.w.shape
        _, h, w = self.x.shape
        return o * c * k * k * h * w


@dataclass
class LayerImage:
    """One case laid out in memory (:func:`layer_image`).

    ``segments`` are ``(region name, address, bytes)``: input map, weights, requant table and the
    two guard bands; the output region ``[out_addr, out_addr + out_bytes)`` holds
    ``out_channels`` channels (the real ones padded to a multiple of 8) and is left as it is.
    """

    segments: list
    plan: LayerPlan
    out_addr: int
    out_bytes: int
    out_channels: int

    def region(self, addr):
        """The name of what ``addr`` holds, for messages."""
        if self.out_addr <= addr < self.out_addr + self.out_bytes:
            return "output map"
        for name, start, blob in self.segments:
            if start <= addr < start + len(blob):
                return name
        return "unused memory"


def layer_image(case, cfg):
    """Lay one case out in memory: each region on its own 4 KB page (plus ``case.addr_offset``),
    the output region between two guard bands (:func:`guard_pattern`).

    Returns
    -------
    LayerImage
    """
    fm = fm_to_ddr(case.x)
    wts = weights_to_ddr(case.w, cfg.p_ic, cfg.p_oc)
    prm = params_to_ddr(case.bias, case.m_pos, case.m_neg, case.shift, cfg.p_oc)
    cursor, segments = 0, []
    for name, blob in (("input map", fm), ("weights", wts), ("requant table", prm),
                       ("guard band before the output", guard_pattern(GUARD_BYTES))):
        addr = (cursor // _PAGE + 1) * _PAGE + case.addr_offset
        segments.append((name, addr, blob))
        cursor = addr + len(blob)
    out_addr = cursor
    (_, in_addr, _), (_, w_addr, _), (_, param_addr, _), _ = segments
    plan = plan_layer(cfg, case.x.shape, case.w.shape[0], case.kernel, case.pool, case.out_int32,
                      in_addr=in_addr, out_addr=out_addr, w_addr=w_addr, param_addr=param_addr,
                      max_tile_rows=case.max_tile_rows, upsample=case.upsample,
                      buffering=case.buffering)
    oh, ow = plan.out_hw
    out_channels = _ceil(case.w.shape[0], 8) * 8
    out_bytes = out_channels * oh * ow * (4 if case.out_int32 else 1)
    segments.append(("guard band after the output", out_addr + out_bytes,
                     guard_pattern(GUARD_BYTES)))
    return LayerImage(segments, plan, out_addr, out_bytes, out_channels)


def random_case(rng, name, c, h, w, o, kernel, pool=Pool.NONE, out_int32=False,
                max_tile_rows=None, extreme=False, addr_offset=0, upsample=False, buffering=None):
    """A random layer: uniform int8 inputs, weights in [-127, 127], multipliers and shifts drawn
    so outputs spread over the int8 range.

    With ``extreme``, each output channel instead gets one of five requantization regimes at
    random: the calibrated one; saturation both ways (shift 1, both multipliers 65535: every
    nonzero accumulator clamps to 127 or -128); zero multipliers (m_pos or m_neg 0); the largest
    shift (47, multipliers 65535: everything rounds to 0 or ±1 at most); a bias of ±2**24 (one
    saturation end).
    """
    x = rng.integers(-128, 128, size=(c, h, w), dtype=np.int8)
    wt = rng.integers(-127, 128, size=(o, c, kernel, kernel), dtype=np.int8)
    bias = rng.integers(-(1 << 16), 1 << 16, size=o).astype(np.int32)
    # |acc| ~ sqrt(C·K·K)·127·74: pick shift so the typical output lands near ±64.
    typical = np.sqrt(c * kernel * kernel) * 127 * 74
    shift = np.full(o, int(np.clip(np.ceil(np.log2(typical * 65535 / 64)), 1, 47)), np.int64)
    m_pos = rng.integers(1, 65536, size=o).astype(np.int64)
    m_neg = (m_pos // 10).astype(np.int64)
    if extreme:
        regime = rng.integers(0, 5, size=o)
        saturate, zero, small, biased = (regime == i for i in range(1, 5))
        m_pos[saturate | small] = m_neg[saturate | small] = 65535
        shift[saturate] = 1
        shift[small] = 47
        m_pos[zero & (rng.random(o) < 0.5)] = 0
        m_neg[zero] = np.where(m_pos[zero] == 0, m_neg[zero], 0)
        bias[biased] = np.where(rng.random(biased.sum()) < 0.5, (1 << 24) - 1, -(1 << 24))
    return LayerCase(name, x, wt, bias, m_pos, m_neg, shift, Pool(pool), out_int32,
                     max_tile_rows, addr_offset, upsample, buffering)


def tile_width_limits(cfg, kernel, pool, rows):
    """The largest map width whose row tiles still hold ``rows`` output rows (``rows`` = 1: the
    widest map the planner takes at all), from :func:`hdl.descriptor.plan_layer` itself."""
    def fits(w):
        try:
            plan = plan_layer(cfg, (1, 64, w), 1, kernel, pool, False, in_addr=0, out_addr=0,
                              w_addr=0, param_addr=0)
        except ValueError:
            return False
        return plan.fields["tile_rows"] >= rows

    lo, hi = 1, cfg.acc_depth + cfg.ibuf_depth  # fits(lo); not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


#: The descriptor's 8-bit channel-group counts cap channels at 255 groups of 8.
_MAX_CHANNELS = 255 * 8
#: Rough cycle budget of one fuzz layer (passes × pixels): keeps the default fuzz in minutes.
_FUZZ_CYCLES = 60_000


def _channels(rng, group):
    """A channel count with the group boundaries over-represented: one in three at a multiple of
    ``group`` or one off it, one in six a single channel, the rest uniform up to 3 groups."""
    u = rng.random()
    if u < 1 / 3:
        return max(1, group * int(rng.integers(1, 5)) + int(rng.integers(-1, 2)))
    if u < 1 / 2:
        return 1
    return int(rng.integers(1, 3 * group + 2))


def fuzz_case(rng, index, cfg=None):
    """Draw the ``index``-th layer of a fuzz run.

    The kernel and the output mode are stratified, the shape class cycles, the rest is random,
    so that any 24 consecutive draws hold every kernel × output mode in every shape class, and
    any 48 also the upsample in every shape class:

    - kernel × output mode (``index % 8``): 1×1 or 3×3, times no pool, 2×2/2, 2×2/1 or int32;
      the no-pool draws upsample (int8 written x2, each pixel to its 2x2 block) when
      ``index // 8`` is odd;
    - shape class (``index // 8 % 3``):

      0. small maps (1-12 × 1-12) with channel counts at and one off the group sizes (P_ic for
         C, P_oc and 8 for O, :func:`_channels`); one in three tiled into 1-3-row tiles;
      1. widths at the tiling limits (:func:`tile_width_limits`): the widest map the planner
         takes, one column less, and the widths where tiles drop from 2 to 1 and from 3 to 2
         rows (at and one above), rotating with the index so that every 8 draws of the class
         hold all six; maps 1-3 tiles high (a wider map is refused by the planner, which
         ``tests/test_engine_layers.py`` checks against the documented limits);
      2. many channels: up to 9 groups of P_ic inputs, the output count rotating with the
         index over an odd multiple of 8 (the last P_oc pass half empty), a multiple of P_oc
         and one off a multiple of 8; and two draws in eight at the descriptor's limit
         (2033-2040 input, then output channels, a 1×1 to 2×2 map);

    - everywhere: half the layers with extreme requantization (:func:`random_case`), half with
      every region 8-byte aligned off its page start (bursts cross 4 KB boundaries elsewhere);
    - input-buffer mode (``index // 3 % 4``): the planner's choice (twice), or forced streaming
      (one load per output-channel group), or forced resident in one region (where it fits),
      since the planner picks the two-halves resident mode for almost every fuzz shape.

    A layer's estimated cycles are capped (map height lowered) to keep runs short.
    """
    cfg = cfg or EngineConfig()
    kernel = (1, 3)[index % 2]
    mode = index // 2 % 4
    pool, out_int32 = (Pool.NONE, Pool.P2S2, Pool.P2S1, Pool.NONE)[mode], mode == 3
    upsample = mode == 0 and index // 8 % 2 == 1
    shape_class, turn = index // 8 % 3, index // 24
    tile = None
    if shape_class == 0:
        c, o = _channels(rng, cfg.p_ic), _channels(rng, (8, cfg.p_oc)[int(rng.integers(2))])
        h, w = (int(rng.integers(1, 13)) for _ in range(2))
        if rng.random() < 1 / 3:
            tile = int(rng.integers(1, 4))
    elif shape_class == 1:
        c, o = _channels(rng, cfg.p_ic), _channels(rng, cfg.p_oc)
        limit = tile_width_limits(cfg, kernel, pool, 1)
        two, three = (tile_width_limits(cfg, kernel, pool, r) for r in (2, 3))
        w = (limit, limit - 1, two + 1, two, three + 1, three)[(index + turn) % 6]
        # Conv rows per tile at this width (on a map tall enough to fill a tile).
        rows = plan_layer(cfg, (c, 64, w), o, kernel, pool, out_int32, in_addr=0, out_addr=0,
                          w_addr=0, param_addr=0).fields["tile_conv_rows"]
        h = int(rng.integers(1, 3 * rows + 2))
    else:
        c = cfg.p_ic * int(rng.integers(1, 10)) + int(rng.integers(-1, 2))
        k = int(rng.integers(1, 5))
        o = (8 * (2 * k - 1), cfg.p_oc * k, 8 * k + int(rng.choice([-1, 1])))[index % 3]
        h, w = (int(rng.integers(1, 7)) for _ in range(2))
        if index % 4 == turn % 4:
            limit = _MAX_CHANNELS - int(rng.integers(0, 8))
            c, o = (limit, min(o, 17)) if index // 4 % 2 == 0 else (min(c, 17), limit)
            h, w = (int(rng.integers(1, 3)) for _ in range(2))
    c, o = max(c, 1), max(o, 1)
    passes = _ceil(o, cfg.p_oc) * _ceil(c, cfg.p_ic) * kernel * kernel
    h = max(1, min(h, _FUZZ_CYCLES // (passes * w)))
    offset = 8 * int(rng.integers(1, _PAGE // 8)) if rng.random() < 0.5 else 0
    buffering = (None, Buffering.STREAM, None, Buffering.SINGLE)[index // 3 % 4]
    try:
        plan_layer(cfg, (c, h, w), o, kernel, pool, out_int32, in_addr=0, out_addr=0, w_addr=0,
                   param_addr=0, max_tile_rows=tile, upsample=upsample, buffering=buffering)
    except ValueError:
        buffering = None  # too large to be resident in one region
    output = "int32" if out_int32 else "upsample" if upsample else pool.name
    name = (f"fuzz{index}[{c}x{h}x{w}->{o} k{kernel} {output}"
            f"{f' tile{tile}' if tile else ''}{f' +{offset:#x}' if offset else ''}"
            f"{f' {buffering.value}' if buffering else ''}]")
    return random_case(rng, name, c, h, w, o, kernel, pool, out_int32, tile,
                       extreme=rng.random() < 0.5, addr_offset=offset, upsample=upsample,
                       buffering=buffering)
