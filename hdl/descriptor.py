"""The layer descriptor: its hardware layout and the host-side planner that fills it.

The engine does no multiplication on shapes: the planner (:func:`plan_layer`, used by tests, the
benchmark and the compiler) computes the tiling and every derived product, and the engine walks
them with adders. The packed descriptor is :data:`DESCRIPTOR_WORDS` little-endian 32-bit words
(bit ``i`` of the struct is bit ``i % 32`` of word ``i // 32``); ``docs/engine.md`` lists the
fields.
"""

import enum as py_enum
from dataclasses import dataclass

from amaranth import Signal, signed, unsigned
from amaranth.lib import data, enum

from hdl.bram import BRAM_READ_LATENCY
from hdl.fanout import Replicated

__all__ = [
    "DESCRIPTOR_WORDS",
    "DESC_LATENCY",
    "Descriptor",
    "EngineConfig",
    "IBUF_BANK",
    "Buffering",
    "LayerPlan",
    "Pool",
    "last_index",
    "unit_descriptor",
    "pack_descriptor",
    "plan_layer",
]


#: Registers between the engine's descriptor and a unit's copy of it (:func:`unit_descriptor`):
#: a unit's ``desc`` input must hold the layer from this many cycles before ``run`` rises.
DESC_LATENCY = 2


def last_index(m, count, *, name):
    """``count - 1`` (``count`` a descriptor field) in a register of its own, so that a unit's
    "last index" test is an equality against a register instead of a subtraction's carry chain
    and then a compare.

    Reloaded every cycle, and without reset: the engine loads the descriptor at the launch, the
    units run from ``DESC_LATENCY + 1`` >= 3 cycles after it (the cycle before that resets
    them), so the register holds the layer's value from their first running cycle on, and the
    reset cannot clear it.
    """
    last = Signal(len(count), name=name, reset_less=True)
    m.d.sync += last.eq(count - 1)
    return last


def unit_descriptor(m, desc):
    """A unit's own copy of the descriptor ``desc``, :data:`DESC_LATENCY` registers behind it, as
    a :class:`Descriptor` view.

    The engine's one descriptor register drives every unit, spread over the chip: a field's net
    to the farthest of them was the routed worst path (``in_plane``, 8.1 ns of routing in one
    hop). A copy per unit is placed among that unit's loads. Its registers are
    :class:`hdl.fanout.Replicated` copies, which yosys does not merge with the other units'
    identical copies; the bits a unit never reads are removed with their loads.

    Two registers, because a placer puts a register between the ends of its nets: one copy sat
    halfway between the engine's register and the unit's loads, and the compute unit's
    ``tile_pix`` took 13.7 ns from its copy to its adders (routed ``0d95c01``). With two, each
    half of the distance has a cycle.

    ``desc`` changes only at a launch; the units are reset ``DESC_LATENCY`` cycles after it and
    run from the next cycle, the first in which the copy holds the layer.
    """
    value = desc.as_value()
    for k in range(DESC_LATENCY):
        m.submodules[f"desc_copy{k}"] = copy = Replicated(1, width=len(value))
        m.d.comb += copy.i.eq(value)
        value = copy.o[0]
    return Descriptor(value)


class Pool(enum.Enum, shape=2):
    """Maxpool after requantization (darknet geometry, docs/fixed-point.md §5)."""

    NONE = 0
    P2S2 = 1  #: size 2, stride 2: output ceil(H/2) x ceil(W/2)
    P2S1 = 2  #: size 2, stride 1, bottom/right padding: output H x W


class Descriptor(data.Struct):
    """Hardware layout of one layer descriptor (field order = bit order, LSB first).

    Addresses are byte addresses, 8-byte aligned. ``*_beats`` / ``*_plane`` counts are in 64-bit
    beats of the feature-map layout ``[C/8][H][W][8]`` (int32 output: ``[O/8][H][W][8]`` int32,
    four beats per pixel).
    """

    in_addr: unsigned(32)
    out_addr: unsigned(32)
    w_addr: unsigned(32)
    param_addr: unsigned(32)
    width: unsigned(16)  #: W of the input and of the convolution output (stride 1, same padding)
    height: unsigned(16)  #: H
    out_width: unsigned(16)  #: after pooling
    out_height: unsigned(16)
    in_groups: unsigned(8)  #: ceil(C / 8)
    out_groups: unsigned(8)  #: ceil(O / 8): feature-map channel groups written
    og_passes: unsigned(8)  #: ceil(O / P_oc): output-channel groups computed
    kernel3: unsigned(1)  #: 1: 3x3 kernel with padding 1; 0: 1x1 without padding
    pool: Pool
    out_int32: unsigned(1)  #: write int32 accumulators instead of requantized int8 (§7)
    pad_value: signed(8)  #: value of out-of-map input positions (the contract says 0)
    tile_rows: unsigned(16)  #: output (pooled) rows per tile
    tile_conv_rows: unsigned(16)  #: convolution rows per tile (excluding the 2x2/1 overlap row)
    in_plane: unsigned(24)  #: H * W
    tile_pix: unsigned(24)  #: tile_conv_rows * W
    out_plane: unsigned(24)  #: out_height * out_width * beats per pixel
    tile_out_beats: unsigned(24)  #: tile_rows * out_width * beats per pixel
    og_weight_beats: unsigned(24)  #: in_groups * K * K * P_oc
    #: 1: nearest x2 upsample on the write: each output pixel fills its 2x2 block, so the drain
    #: emits every output row twice and every pixel of it twice; ``out_plane`` and
    #: ``tile_out_beats`` count the upsampled map. Only without pool and int32.
    upsample: unsigned(1)
    #: 1: resident tiles: the loader loads each (tile, input group) once and the compute unit
    #: reads it for every output-channel group; 0: streaming, one load per (tile, og, ig).
    resident: unsigned(1)
    #: 1: the input buffer is one region (a resident tile too large for half of it: tiles are
    #: not double-buffered); 0: two halves, used alternately. Only with ``resident``.
    single_region: unsigned(1)
    #: 1: the layer's weight stream (og_passes * og_weight_beats beats) is shorter than the
    #: weight store: read from DDR for the first row tile only, replayed for the others.
    weights_resident: unsigned(1)


DESCRIPTOR_WORDS = (Descriptor.as_shape().size + 31) // 32

#: The input buffer's depth is a multiple of 2048 words (or less): eight DP16KD in their
#: 2K × 9 configuration, the smallest bank that fills its block RAMs (the buffer's banks:
#: ``hdl.engine.loader.buffer_banks``).
IBUF_BANK = 2048


@dataclass(frozen=True)
class EngineConfig:
    """Elaboration parameters of the engine.

    ``p_ic`` input channels (= bytes of one AXI beat) by ``p_oc`` output channels per cycle;
    ``acc_depth`` pixels per accumulator bank (two banks); ``ibuf_depth`` words (pixels of one
    input-channel group) of the input buffer, even, and a multiple of 2048 (one bank of eight
    2K × 9 DP16KD) or less; the planner uses it as two halves (double-buffered tiles) or, for a
    resident tile larger than a half, as one region. The default, 11 × 2048 words (88 DP16KD), holds
    the largest input map of tiny-YOLOv2-VOC and YOLOv3-tiny (13 × 13 × 1024 int8) resident, so
    that no layer of either re-reads its input per output-channel group (``docs/engine.md``,
    tiling).
    ``weight_store_depth`` beats of the weight store: the replayed weights of a whole layer that
    fits (``weights_resident``; 2048 holds those of tiny-YOLO's 208 × 208 layer, re-read 52
    times otherwise), or a FIFO of which the weight loader fills at most ``weight_fifo_depth``
    beats ahead (deeper, its bursts would crowd out the input loads at the start of a layer).
    ``min_pass`` is the shortest pass the accumulator read-modify-write pipeline allows (a
    pixel's bank word is read, registered, added and written back over
    ``BRAM_READ_LATENCY + 2`` cycles; its next read comes one cycle after the write at the
    earliest);
    ``max_burst`` beats per AXI burst.
    """

    p_ic: int = 8
    p_oc: int = 16
    acc_depth: int = 1024
    ibuf_depth: int = 11 * IBUF_BANK
    weight_fifo_depth: int = 512
    weight_store_depth: int = 2048
    out_fifo_depth: int = 512
    max_burst: int = 128
    min_pass: int = BRAM_READ_LATENCY + 3
    data_width: int = 64
    addr_width: int = 32

    def __post_init__(self):
        if self.min_pass < BRAM_READ_LATENCY + 3:
            raise ValueError(f"min_pass must be at least {BRAM_READ_LATENCY + 3} (the "
                             f"accumulator's read-modify-write), not {self.min_pass}")
        if self.p_ic * 8 != self.data_width:
            raise ValueError("p_ic must equal the bytes of one AXI beat")
        if self.p_oc % self.p_ic or self.p_oc & (self.p_oc - 1):
            raise ValueError("p_oc must be a power of two and a multiple of p_ic")
        if not 0 < self.weight_fifo_depth <= self.weight_store_depth:
            raise ValueError("weight_fifo_depth must be positive and at most weight_store_depth")
        bank = min(self.ibuf_depth, IBUF_BANK)
        if self.ibuf_depth < 2 or self.ibuf_depth % 2 or self.ibuf_depth % bank:
            raise ValueError(f"ibuf_depth must be even and at most or a multiple of {IBUF_BANK}")


class Buffering(py_enum.Enum):
    """How a layer uses the input buffer (``docs/engine.md``, tiling)."""

    #: Resident tiles, double-buffered: a tile's input (all channel groups) in one half, loaded
    #: once, read for every output-channel group; the next tile loads into the other half.
    SPLIT = "split"
    #: Resident tiles in the whole buffer: a tile too large for a half; not double-buffered.
    SINGLE = "single"
    #: One input-channel group of a tile per half, re-loaded for every output-channel group.
    STREAM = "stream"


@dataclass(frozen=True)
class LayerPlan:
    """A planned layer: the descriptor's field values plus the shapes they came from.

    ``conv_hw`` is the convolution's output size, ``out_hw`` the map written (after pooling, or
    upsampling).
    """

    fields: dict
    in_shape: tuple
    out_channels: int
    conv_hw: tuple
    out_hw: tuple

    def pack(self):
        """The descriptor as a list of :data:`DESCRIPTOR_WORDS` 32-bit words."""
        return pack_descriptor(self.fields)


def _tile_input_rows(h, conv_rows, extra, kernel):
    """Per row tile of ``conv_rows`` conv rows: the input rows the loader loads (the tile's conv
    rows, the 2x2/1 overlap row, the 3x3 halo rows above and below, clipped to the map)."""
    rows = []
    for c0 in range(0, h, conv_rows):
        c1 = min(c0 + conv_rows + extra, h)
        i0 = c0 - 1 if kernel == 3 and c0 else c0
        rows.append(min(c1 + (1 if kernel == 3 else 0), h) - i0)
    return rows


def _choose_tiling(cfg, h, w, in_groups, og_passes, kernel, step, extra, max_rows, og_bytes,
                   buffering):
    """The buffering mode and output rows per tile with the least DDR traffic (input loads plus
    weights and requant tables, which are read once per tile); ties go to the earlier of
    SPLIT, SINGLE, STREAM. Returns (Buffering, rows) or None if no mode fits."""
    half = cfg.ibuf_depth // 2
    capacity = {Buffering.SPLIT: (half, in_groups), Buffering.SINGLE: (cfg.ibuf_depth, in_groups),
                Buffering.STREAM: (half, 1)}
    best = None
    for mode, (words, groups) in capacity.items():
        if buffering is not None and mode != buffering:
            continue
        for rows in range(max_rows, 0, -1):  # the most rows whose tiles fit
            loaded = _tile_input_rows(h, rows * step, extra, kernel)
            if max(loaded) * w * groups <= words:
                break
        else:
            continue
        loads = og_passes if mode == Buffering.STREAM else 1
        traffic = (sum(loaded) * w * in_groups * loads * cfg.data_width // 8
                   + len(loaded) * og_bytes)
        if best is None or traffic < best[0]:
            best = (traffic, mode, rows)
    return None if best is None else best[1:]


def plan_layer(cfg, in_shape, out_channels, kernel, pool, out_int32, *, in_addr, out_addr,
               w_addr, param_addr, pad_value=0, max_tile_rows=None, upsample=False,
               buffering=None):
    """Plan one layer for the engine: tiling and descriptor fields.

    The tiling (``docs/engine.md``, tiling) takes the most output rows per tile that the
    accumulator bank and the input buffer hold, for each :class:`Buffering` mode, and keeps the
    mode whose DDR traffic (input loads, and weights read once per tile) is least.

    Parameters
    ----------
    cfg : EngineConfig
    in_shape : (C, H, W)
    out_channels : int
    kernel : 1 or 3 (stride 1, padding ``kernel // 2``)
    pool : Pool
    out_int32 : bool
    in_addr, out_addr, w_addr, param_addr : int
        Byte addresses (8-byte aligned) of the input map, output map, weight stream and requant
        table, in the layouts of ``docs/engine.md``.
    max_tile_rows : int, optional
        Cap on output rows per tile (tests use it to force multi-tile layers).
    upsample : bool
        Write the output nearest-upsampled x2 (each pixel to its 2x2 block): the map written is
        ``(out_channels, 2 H, 2 W)``. Not with a pool or int32 output.
    buffering : Buffering, optional
        Force this buffering mode (tests use it to reach each mode).

    Raises
    ------
    ValueError
        If the shape cannot be tiled on this configuration (too wide) or a field overflows.
    """
    c, h, w = in_shape
    pool = Pool(pool)
    if kernel not in (1, 3):
        raise ValueError("kernel must be 1 or 3")
    if out_int32 and pool != Pool.NONE:
        raise ValueError("int32 output cannot be pooled")
    if upsample and (out_int32 or pool != Pool.NONE):
        raise ValueError("only an int8 output without pool can be upsampled")
    if min(c, h, w, out_channels) < 1:
        raise ValueError(f"empty layer: {in_shape} -> {out_channels} channels")
    if pool == Pool.P2S2:
        out_h, out_w, step, extra = (h + 1) // 2, (w + 1) // 2, 2, 0
    elif pool == Pool.P2S1:
        out_h, out_w, step, extra = h, w, 1, 1
    else:
        out_h, out_w, step, extra = h, w, 1, 0
    in_groups = -(-c // cfg.p_ic)
    og_passes = -(-out_channels // cfg.p_oc)
    og_weight_beats = in_groups * kernel * kernel * cfg.p_oc
    # Output rows per tile: the accumulators hold the tile's conv rows (plus the 2x2/1 overlap
    # row); the input buffer, depending on the mode, the input rows of every channel group.
    rows = min(out_h, (cfg.acc_depth // w - extra) // step)
    if max_tile_rows is not None:
        rows = min(rows, max_tile_rows)
    choice = None
    if rows >= 1:
        og_bytes = og_passes * (og_weight_beats + 2 * cfg.p_oc) * cfg.data_width // 8
        forced = None if buffering is None else Buffering(buffering)
        choice = _choose_tiling(cfg, h, w, in_groups, og_passes, kernel, step, extra, rows,
                                og_bytes, forced)
    if choice is None:
        mode = "" if buffering is None else f" in {Buffering(buffering).value} mode"
        raise ValueError(f"layer {in_shape} too wide{mode} for acc_depth={cfg.acc_depth}, "
                         f"ibuf_depth={cfg.ibuf_depth}")
    mode, rows = choice
    # Beats written per output pixel: an int32 pixel is four beats; an upsampled one, a 2x2 block.
    beats_pp = 4 if out_int32 or upsample else 1
    out_groups = -(-out_channels // cfg.p_ic)
    fields = dict(
        in_addr=in_addr, out_addr=out_addr, w_addr=w_addr, param_addr=param_addr,
        width=w, height=h, out_width=out_w, out_height=out_h,
        in_groups=in_groups, out_groups=out_groups,
        og_passes=og_passes, kernel3=int(kernel == 3), pool=pool.value,
        out_int32=int(out_int32), pad_value=pad_value & 0xFF,
        tile_rows=rows, tile_conv_rows=rows * step, in_plane=h * w, tile_pix=rows * step * w,
        out_plane=out_h * out_w * beats_pp, tile_out_beats=rows * out_w * beats_pp,
        og_weight_beats=og_weight_beats, upsample=int(upsample),
        resident=int(mode != Buffering.STREAM), single_region=int(mode == Buffering.SINGLE),
        weights_resident=int(og_passes * og_weight_beats < cfg.weight_store_depth),
    )
    scale = 2 if upsample else 1
    return LayerPlan(fields, tuple(in_shape), out_channels, (h, w),
                     (out_h * scale, out_w * scale))


def pack_descriptor(fields):
    """Pack field values (a dict keyed by :class:`Descriptor` field names) into 32-bit words."""
    layout = Descriptor.as_shape()
    value = 0
    for name, field in layout:
        v = int(fields[name])
        width = field.width
        if not 0 <= v < 1 << width:
            raise ValueError(f"descriptor field {name}={v} does not fit {width} bits")
        value |= v << field.offset
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(DESCRIPTOR_WORDS)]
