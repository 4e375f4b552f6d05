"""The compiler: a :class:`~model.quant.QuantizedNetwork` to an engine :class:`Program`.

Three steps:

1. **Fuse.** Each convolution becomes one engine layer (a first 3x3 layer of fewer channels than
   ``p_ic`` tap-packed: a 1x1 convolution of its input's neighbourhoods, ``docs/engine.md``,
   "Tap packing"), together with the maxpool that follows it
   (the engine pools after requantization: size 2 stride 2 is ``Pool.P2S2``, size 2 stride 1 is
   ``Pool.P2S1``) or the x2 upsample that follows it (on the write). A maxpool whose input is
   also read elsewhere runs as identity 1x1 convolutions instead (:func:`_fuse`). Convolutions
   feeding a detection head write int32 accumulators (docs/fixed-point.md §7); the yolo and
   region layers stay on the host.
2. **Lay out DDR.** Constants first (the descriptor list, then per layer its weights in the
   engine's streaming order and its requant table), then an arena of run-time buffers (the
   input, every engine layer's output, every route's concatenation: its sources' producers write
   side by side into it, :func:`_place`). The layouts are :mod:`firmware.layout`'s.
3. **Plan and pack** one descriptor per layer with :func:`hdl.descriptor.plan_layer`.

Run-time buffers share addresses when their lifetimes are disjoint (:func:`allocate`): buffer
``i`` is live from the first layer that writes it to the last layer that reads it. A program
compiled with ``reuse=False`` keeps every layer's output in DDR after the run, which a
cosimulation that checks all layers at the end needs; with reuse, check each layer as it
completes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from firmware.layout import fm_to_ddr, pack_tap_weights, params_to_ddr, weights_to_ddr
from firmware.program import (
    HOST_BEFORE,
    Program,
    ProgramLayer,
    Segment,
    SegmentKind,
    map_addr,
)
from hdl.descriptor import DESCRIPTOR_WORDS, EngineConfig, Pool, plan_layer
from model.quant import (
    QuantConv,
    QuantizedNetwork,
    QuantMaxpool,
    QuantRegion,
    QuantRoute,
    QuantUpsample,
    QuantYolo,
)

__all__ = [
    "DEFAULT_ALIGNMENT",
    "DEFAULT_MEMORY_SIZE",
    "CompileError",
    "allocate",
    "compile_network",
]

#: DDR of the default board (ULX3S: 32 MiB SDRAM). Larger boards pass their own size.
DEFAULT_MEMORY_SIZE = 32 << 20
#: Segments start on 4 KB pages: an AXI burst never crosses one (AMBA AXI4 A3.4.1), so a page-
#: aligned buffer is read with the fewest bursts.
DEFAULT_ALIGNMENT = 4096
# Darknet's size-2 maxpools with the default padding (size - 1) are the two the engine fuses.
_POOLS = {2: Pool.P2S2, 1: Pool.P2S1}


class CompileError(ValueError):
    """The network or the memory cannot be mapped onto the engine; the message says why."""


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _fm_bytes(shape: Sequence[int], itemsize: int, group: int) -> int:
    """Bytes of a ``(C, H, W)`` map in the ``[C/group][H][W][group]`` layout."""
    c, h, w = shape
    return _round_up(c, group) * h * w * itemsize


def allocate(buffers: Sequence[tuple[int, int, int]], alignment: int,
             reuse: bool = True) -> list[int]:
    """Place buffers in an arena, sharing addresses only between buffers never live together.

    Parameters
    ----------
    buffers : sequence of (size, first, last)
        Bytes, and the closed interval of layer indices over which the buffer is live.
    alignment : int
        Every offset is a multiple of it (sizes are rounded up to it).
    reuse : bool
        False lays the buffers end to end in the given order.

    Returns
    -------
    list of int
        Arena offset of each buffer. With reuse: greedy first fit, largest buffer first, which
        is optimal for a chain of layers (ping-pong) and never overlaps two buffers whose
        intervals intersect.
    """
    offsets = [0] * len(buffers)
    if not reuse:
        offset = 0
        for i, (size, _, _) in enumerate(buffers):
            offsets[i] = offset
            offset += _round_up(size, alignment)
        return offsets
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    for i in sorted(range(len(buffers)), key=lambda i: (-buffers[i][0], buffers[i][1])):
        size, first, last = buffers[i]
        size = _round_up(size, alignment)
        busy = sorted((o, e) for o, e, f, la in placed if f <= last and first <= la)
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, end)
        offsets[i] = offset
        placed.append((offset, offset + size, first, last))
    return offsets


class _Step(NamedTuple):
    """One engine layer before layout."""

    conv_index: int | None  # None: the identity convolution that carries a separate maxpool
    conv: QuantConv
    pool_index: int | None
    pool: Pool
    source: int  # darknet index of the map it reads; -1: the network input
    upsample: bool = False
    group: int = 0  # first channel group it reads and writes within those maps (identity slices)
    taps_packed: bool = False  # reads the network input tap-packed, as a 1x1 convolution

    @property
    def engine_conv(self) -> QuantConv:
        """The convolution the engine runs: ``conv``, or its 1x1 form on the tap-packed map."""
        if not self.taps_packed:
            return self.conv
        c, h, w = self.conv.in_shape
        return dataclasses.replace(self.conv, in_shape=(c * self.conv.size ** 2, h, w), size=1,
                                   padding=0, weight=pack_tap_weights(self.conv.weight))

    @property
    def out_index(self) -> int:
        """Darknet layer whose output the engine writes."""
        index = self.conv_index if self.pool_index is None else self.pool_index
        return index + 1 if self.upsample else index

    @property
    def index(self) -> int:
        """Darknet layer that messages name: the convolution, or the pool an identity carries."""
        return self.pool_index if self.conv_index is None else self.conv_index

    @property
    def constants(self) -> str:
        """Name of its weight and requant-table segments: identities of one width share them."""
        if self.conv_index is None:
            return f"identity{self.conv.in_shape[0]}"
        return f"conv{self.conv_index:02d}"


def _readers(layers: Sequence) -> dict[int, list[int]]:
    """Darknet index (-1: the network input) -> the layers that read its output, in order."""
    readers: dict[int, list[int]] = {i: [] for i in range(-1, len(layers))}
    for index, layer in enumerate(layers):
        for source in layer.layers if isinstance(layer, QuantRoute) else (index - 1,):
            readers[source].append(index)
    return readers


def _identity_conv(channels: int, hw: tuple[int, int], scale: float) -> QuantConv:
    """An exact identity 1x1 convolution of ``channels`` int8 channels on an ``hw`` map.

    Weight 1 on the diagonal and bias 0 make the accumulator the input ``x``; requantizing with
    ``m_pos = m_neg = 2`` and ``shift = 1`` gives ``(2x + 1) >> 1 = x`` exactly (no clamping:
    ``x`` is int8), so a pool fused after it pools the input itself.
    """
    ones = np.ones(channels, np.int64)
    shape = (channels, *hw)
    return QuantConv(shape, shape, 1, 1, 0, "linear",
                     np.eye(channels, dtype=np.int8).reshape(channels, channels, 1, 1),
                     np.zeros(channels, np.int32), 2 * ones, 2 * ones, ones, scale,
                     ones.astype(np.float64), scale, False)


def _packs_taps(index: int, conv: QuantConv, cfg: EngineConfig) -> bool:
    """Whether convolution ``index`` runs tap-packed: it reads the network input, which the host
    then writes packed (only layer 0 does: a darknet route names layers, not the input), and
    packing its taps into lanes takes fewer passes."""
    c, k = conv.in_shape[0], conv.size
    return index == 0 and -(-c * k * k // cfg.p_ic) < -(-c // cfg.p_ic) * k * k


def _fuse(qnet: QuantizedNetwork, cfg: EngineConfig, pack_taps: bool) -> list[_Step]:
    """The engine layers of ``qnet``, or a :class:`CompileError` naming the layer it cannot map.

    A maxpool fuses into the convolution before it, unless something else reads that
    convolution's un-pooled output (YOLOv3-tiny's layer 8 feeds a maxpool and a route): then the
    convolution writes its whole map and the pool runs on it as identity 1x1 convolutions, one
    per ``p_oc`` channels (``docs/engine.md``, "Route and upsample"). An upsample fuses into the
    write of the convolution before it. Routes are memory layout (:func:`_place`); yolo and
    region layers run on the host.
    """
    steps: list[_Step] = []
    layers = qnet.layers
    readers = _readers(layers)
    for index, layer in enumerate(layers):
        # The engine layer that writes this layer's input, if it is the one just planned.
        prev = steps[-1] if steps and steps[-1].out_index == index - 1 else None
        plain = (prev is not None and prev.conv_index is not None and prev.pool == Pool.NONE
                 and not prev.upsample)
        if isinstance(layer, QuantConv):
            if layer.stride != 1 or layer.size not in (1, 3) or layer.padding != layer.size // 2:
                raise CompileError(
                    f"layer {index}: the engine runs 1x1 and 3x3 stride-1 'same' convolutions, "
                    f"not size {layer.size} stride {layer.stride} padding {layer.padding}")
            packed = pack_taps and _packs_taps(index, layer, cfg)
            steps.append(_Step(index, layer, None, Pool.NONE, index - 1, taps_packed=packed))
        elif isinstance(layer, QuantMaxpool):
            if not plain:
                raise CompileError(f"layer {index}: a maxpool must follow a convolution to be "
                                   "fused with it")
            if prev.conv.output_int32:
                raise CompileError(f"layer {index}: cannot pool the int32 output of layer "
                                   f"{prev.conv_index}")
            if layer.size != 2 or layer.stride not in _POOLS or layer.padding != 1:
                raise CompileError(
                    f"layer {index}: the engine pools size 2 stride 1 or 2 with darknet's "
                    f"padding 1, not size {layer.size} stride {layer.stride} "
                    f"padding {layer.padding}")
            pool = _POOLS[layer.stride]
            if readers[index - 1] == [index]:
                steps[-1] = prev._replace(pool_index=index, pool=pool)
                continue
            channels, h, w = layer.in_shape
            for c0 in range(0, channels, cfg.p_oc):
                conv = _identity_conv(min(cfg.p_oc, channels - c0), (h, w), layer.scale)
                steps.append(_Step(None, conv, index, pool, index - 1, group=c0 // cfg.p_ic))
        elif isinstance(layer, QuantUpsample):
            if layer.stride != 2:
                raise CompileError(f"layer {index}: the engine upsamples by 2, not "
                                   f"{layer.stride}")
            if not plain or prev.conv.output_int32 or readers[index - 1] != [index]:
                raise CompileError(
                    f"layer {index}: the engine upsamples on the write of an int8, un-pooled "
                    f"convolution that nothing else reads; layer {index - 1} is not one")
            steps[-1] = prev._replace(upsample=True)
        elif isinstance(layer, QuantRegion):
            if index != len(layers) - 1:
                raise CompileError(f"layer {index}: the region layer must be the last layer")
        elif not isinstance(layer, QuantRoute | QuantYolo):
            raise CompileError(f"layer {index}: no engine mapping for {type(layer).__name__}")
    if not steps:
        raise CompileError("the network has no convolution")
    for step in steps:
        on_engine = step.conv.output_int32 and [
            r for r in readers[step.conv_index]
            if not isinstance(layers[r], QuantRegion | QuantYolo)]
        if on_engine:
            raise CompileError(f"layer {step.conv_index}: only the last convolution may write "
                               f"int32, or one that only detection heads read (layer "
                               f"{on_engine[0]} reads it on the engine)")
    return steps


class _Buffer:
    """One run-time allocation: the input, an engine layer's output, or a route's sources side
    by side. ``index`` is the darknet layer whose output it holds (-1: the input)."""

    def __init__(self, index: int, shape: Sequence[int], itemsize: int, concat: bool = False):
        self.index, self.shape, self.itemsize, self.concat = index, tuple(shape), itemsize, concat
        self.first: int | None = None  # first engine layer writing it
        self.last: int | None = None  # last engine layer reading it


def _place(qnet: QuantizedNetwork, steps: list[_Step],
           group: int) -> tuple[list[_Buffer], dict[int, tuple[int, int]]]:
    """Map every feature map the engine touches to a buffer and a channel-group offset in it.

    A route with one source is an alias of it; a route with several gets one buffer holding its
    sources side by side (layout ``[C/g][H][W][g]``, so source ``k`` starts after the channel
    groups of sources ``0 .. k-1``), and each source's producer writes straight into it.

    Returns
    -------
    buffers : list of _Buffer
        Live ones, the input first, then in order of their first writer; ``first``/``last``
        filled (``len(steps)``: the host reads it after the run).
    views : dict
        Darknet index (-1: the input) -> (index into ``buffers``, first channel group).
    """
    layers = qnet.layers
    first = steps[0]  # the only step that may read the input tap-packed (_packs_taps)
    every = [_Buffer(-1, first.engine_conv.in_shape if first.taps_packed else qnet.input_shape,
                     1)]
    views = {-1: (0, 0)}
    for step in steps:
        if step.out_index not in views:
            views[step.out_index] = (len(every), 0)
            every.append(_Buffer(step.out_index, layers[step.out_index].out_shape,
                                 4 if step.conv.output_int32 else 1))
    merged = set()
    for index, layer in enumerate(layers):
        if not isinstance(layer, QuantRoute):
            continue
        if len(layer.layers) == 1:
            views[index] = views[layer.layers[0]]
            continue
        new = len(every)
        every.append(_Buffer(index, layer.out_shape, 1, concat=True))
        views[index] = (new, 0)
        offset = 0
        for k, source in enumerate(layer.layers):
            buf_id, first_group = views.get(source, (0, 0))
            buf = every[buf_id]
            shape = layers[source].out_shape
            if buf.index == -1 or buf.itemsize != 1 or first_group or shape[1:] != \
                    layer.out_shape[1:]:
                raise CompileError(f"layer {index}: route source {source} is not an int8 map "
                                   f"of size {layer.out_shape[1:]} that an engine layer writes")
            if buf.concat:
                raise CompileError(f"layer {index}: route source {source} is already "
                                   f"concatenated by layer {buf.index}")
            if k < len(layer.layers) - 1 and shape[0] % group:
                raise CompileError(
                    f"layer {index}: route source {source} has {shape[0]} channels, not a "
                    f"multiple of the {group}-channel group, so the next source would not start "
                    "on a channel group")
            for key, (b, g) in views.items():
                if b == buf_id:
                    views[key] = (new, offset + g)
            merged.add(buf_id)
            offset += shape[0] // group
    live = [i for i in range(len(every)) if i not in merged]
    n = len(steps)
    for i, step in enumerate(steps):
        for key, when in ((step.out_index, "first"), (step.source, "last")):
            if key not in views:
                raise CompileError(f"layer {step.index}: reads layer {key}, which the "
                                   "engine does not write (a detection head's output)")
            buf = every[views[key][0]]
            if when == "first":
                buf.first = i if buf.first is None else min(buf.first, i)
            else:
                buf.last = i if buf.last is None else max(buf.last, i)
    every[0].first = HOST_BEFORE
    for buf in every:
        if buf.last is None:
            buf.last = n  # nothing on the engine reads it: the host's output
    order = sorted(live, key=lambda i: every[i].first)
    renumber = {old: new for new, old in enumerate(order)}
    return ([every[i] for i in order],
            {key: (renumber[b], g) for key, (b, g) in views.items() if b in renumber})


def compile_network(qnet: QuantizedNetwork, cfg: EngineConfig, *,
                    memory_size: int = DEFAULT_MEMORY_SIZE, reuse: bool = True,
                    alignment: int = DEFAULT_ALIGNMENT, x_q: np.ndarray | None = None,
                    pack_taps: bool = True) -> Program:
    """Compile ``qnet`` for the engine ``cfg``.

    Parameters
    ----------
    qnet : QuantizedNetwork
        Convolutions (1x1 or 3x3, stride 1, same padding), each optionally followed by a size-2
        maxpool, ending in an int32 convolution and optionally a region layer.
    cfg : EngineConfig
    memory_size : int
        DDR bytes available; a program that needs more is refused.
    reuse : bool
        Share feature-map buffers between layers whose lifetimes are disjoint.
    alignment : int
        Byte alignment of every segment, a multiple of the AXI beat (``cfg.p_ic`` bytes).
    x_q : int8 array, shape ``qnet.input_shape``, optional
        Network input to place in the image; without it the input segment has no payload.
    pack_taps : bool
        Run a first 3x3 layer of fewer channels than ``p_ic`` tap-packed (``docs/engine.md``,
        "Tap packing"): about 2.2x fewer of its passes, for an input map ``K·K`` channels wide
        that the host writes (4x the bytes of the plain one at 3 channels).

    Returns
    -------
    Program

    Raises
    ------
    CompileError
        A layer the engine cannot run, a shape it cannot tile, or a program larger than
        ``memory_size``; the message names the layer or the sizes.
    """
    if alignment % cfg.p_ic:
        raise CompileError(f"alignment {alignment} is not a multiple of the {cfg.p_ic}-byte beat")
    if x_q is not None and tuple(x_q.shape) != tuple(qnet.input_shape):
        raise CompileError(f"input shape {x_q.shape}, the network expects {qnet.input_shape}")
    steps = _fuse(qnet, cfg, pack_taps)
    n = len(steps)
    group = cfg.p_ic
    segments: list[Segment] = []

    def add(seg: Segment) -> int:
        segments.append(seg)
        return len(segments) - 1

    # Constants, live over the whole run. Descriptors first: their size is known up front, their
    # contents only once every address is. Identity convolutions of one width share theirs.
    desc_bytes = n * DESCRIPTOR_WORDS * 4
    cursor = desc_bytes
    const_ids: dict[str, list[int]] = {}
    for step in steps:
        conv, name = step.engine_conv, step.constants
        if name in const_ids:
            continue
        wts = weights_to_ddr(conv.weight, cfg.p_ic, cfg.p_oc)
        prm = params_to_ddr(conv.bias, conv.m_pos, conv.m_neg, conv.shift, cfg.p_oc)
        ids = []
        for suffix, kind, blob in (("weights", SegmentKind.WEIGHTS, wts),
                                   ("params", SegmentKind.PARAMS, prm)):
            cursor = _round_up(cursor, alignment)
            ids.append(add(Segment(f"{name}.{suffix}", kind, cursor, len(blob), HOST_BEFORE, n,
                                   blob)))
            cursor += len(blob)
        const_ids[name] = ids
    arena = _round_up(cursor, alignment)

    # Run-time buffers: the input, each engine layer's output, each route's concatenation.
    buffers, views = _place(qnet, steps, group)
    offsets = allocate([(_fm_bytes(b.shape, b.itemsize, group), b.first, b.last)
                        for b in buffers], alignment, reuse)
    buffer_ids = []
    for buf, offset in zip(buffers, offsets, strict=True):
        if buf.index == -1:
            name, kind, data = "input", SegmentKind.INPUT, None
        else:
            name, data = f"layer{buf.index:02d}.out", None
            kind = SegmentKind.OUTPUT if buf.last == n else SegmentKind.FEATURE_MAP
        buffer_ids.append(add(Segment(name, kind, arena + offset,
                                      _fm_bytes(buf.shape, buf.itemsize, group), buf.first,
                                      buf.last, data)))

    layers = []
    words = []
    for step in steps:
        conv = step.conv
        out_shape = (conv.out_shape[0], *qnet.layers[step.out_index].out_shape[1:])
        (in_buf, in_group), (out_buf, out_group) = views[step.source], views[step.out_index]
        layer = ProgramLayer(
            step.conv_index, step.pool_index, tuple(conv.in_shape), out_shape, conv.size,
            step.pool, conv.output_int32, buffer_ids[in_buf], buffer_ids[out_buf],
            *const_ids[step.constants],
            step.upsample, in_group + step.group, out_group + step.group, step.taps_packed)
        engine = step.engine_conv
        w_seg, p_seg = segments[layer.weight_segment], segments[layer.param_segment]
        try:
            plan = plan_layer(
                cfg, engine.in_shape, conv.out_shape[0], engine.size, step.pool,
                conv.output_int32,
                in_addr=map_addr(segments[layer.input_segment], layer.input_group,
                                 layer.engine_in_shape, group, np.int8),
                out_addr=map_addr(segments[layer.output_segment], layer.output_group,
                                  layer.out_shape, group, layer.out_dtype),
                w_addr=w_seg.addr, param_addr=p_seg.addr, upsample=step.upsample)
            words += plan.pack()
        except ValueError as exc:
            raise CompileError(f"layer {step.index}: {exc}") from exc
        layers.append(layer)
    if x_q is not None:
        seg = segments[layers[0].input_segment]
        x = np.asarray(x_q, np.int8)
        segments[layers[0].input_segment] = dataclasses.replace(
            seg, data=fm_to_ddr(layers[0].engine_input(x), group))
    desc = add(Segment("descriptors", SegmentKind.DESCRIPTORS, 0, desc_bytes, HOST_BEFORE, n,
                       np.asarray(words, "<u4").tobytes()))
    program = Program(cfg, layers, segments, desc, alignment)
    if program.footprint > memory_size:
        raise CompileError(f"the program needs {program.footprint} bytes of DDR, the memory has "
                           f"{memory_size}")
    return program
