"""The compiler: a :class:`~model.quant.QuantizedNetwork` to an engine :class:`Program`.

Three steps:

1. **Fuse.** Each convolution becomes one engine layer, together with the maxpool that follows it
   (the engine pools after requantization: size 2 stride 2 is ``Pool.P2S2``, size 2 stride 1 is
   ``Pool.P2S1``). The last convolution writes int32 accumulators (docs/fixed-point.md §7); the
   region layer stays on the host.
2. **Lay out DDR.** Constants first (the descriptor list, then per layer its weights in the
   engine's streaming order and its requant table), then an arena of run-time buffers (the
   input, every engine layer's output). The layouts are :mod:`firmware.layout`'s.
3. **Plan and pack** one descriptor per layer with :func:`hdl.descriptor.plan_layer`.

Run-time buffers share addresses when their lifetimes are disjoint (:func:`allocate`): buffer
``i`` is live from the layer that writes it to the last layer that reads it. A program compiled
with ``reuse=False`` keeps every layer's output in DDR after the run, which a cosimulation that
checks all layers at the end needs; with reuse, check each layer as it completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from firmware.layout import fm_to_ddr, params_to_ddr, weights_to_ddr
from firmware.program import HOST_BEFORE, Program, ProgramLayer, Segment, SegmentKind
from hdl.descriptor import DESCRIPTOR_WORDS, EngineConfig, Pool, plan_layer
from model.quant import QuantConv, QuantizedNetwork, QuantMaxpool, QuantRegion

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

    conv_index: int
    conv: QuantConv
    pool_index: int | None
    pool: Pool

    @property
    def out_index(self) -> int:
        """Darknet layer whose output the engine writes."""
        return self.conv_index if self.pool_index is None else self.pool_index


def _fuse(qnet: QuantizedNetwork) -> list[_Step]:
    """The engine layers of ``qnet``, or a :class:`CompileError` naming the layer it cannot map."""
    steps: list[_Step] = []
    layers = qnet.layers
    for index, layer in enumerate(layers):
        if isinstance(layer, QuantConv):
            if layer.stride != 1 or layer.size not in (1, 3) or layer.padding != layer.size // 2:
                raise CompileError(
                    f"layer {index}: the engine runs 1x1 and 3x3 stride-1 'same' convolutions, "
                    f"not size {layer.size} stride {layer.stride} padding {layer.padding}")
            steps.append(_Step(index, layer, None, Pool.NONE))
        elif isinstance(layer, QuantMaxpool):
            if not steps or steps[-1][0] != index - 1:
                raise CompileError(f"layer {index}: a maxpool must follow a convolution to be "
                                   "fused with it")
            conv_index, conv, _, _ = steps[-1]
            if conv.output_int32:
                raise CompileError(f"layer {index}: cannot pool the int32 output of layer "
                                   f"{conv_index}")
            if layer.size != 2 or layer.stride not in _POOLS or layer.padding != 1:
                raise CompileError(
                    f"layer {index}: the engine pools size 2 stride 1 or 2 with darknet's "
                    f"padding 1, not size {layer.size} stride {layer.stride} "
                    f"padding {layer.padding}")
            steps[-1] = _Step(conv_index, conv, index, _POOLS[layer.stride])
        elif isinstance(layer, QuantRegion):
            if index != len(layers) - 1:
                raise CompileError(f"layer {index}: the region layer must be the last layer")
        else:
            raise CompileError(f"layer {index}: no engine mapping for {type(layer).__name__}")
    if not steps:
        raise CompileError("the network has no convolution")
    for conv_index, conv, _, _ in steps[:-1]:
        if conv.output_int32:
            raise CompileError(f"layer {conv_index}: only the last convolution may write int32")
    return steps


def compile_network(qnet: QuantizedNetwork, cfg: EngineConfig, *,
                    memory_size: int = DEFAULT_MEMORY_SIZE, reuse: bool = True,
                    alignment: int = DEFAULT_ALIGNMENT, x_q: np.ndarray | None = None) -> Program:
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
    steps = _fuse(qnet)
    n = len(steps)
    group = cfg.p_ic
    segments: list[Segment] = []

    def add(seg: Segment) -> int:
        segments.append(seg)
        return len(segments) - 1

    # Constants, live over the whole run. Descriptors first: their size is known up front, their
    # contents only once every address is.
    desc_bytes = n * DESCRIPTOR_WORDS * 4
    cursor = desc_bytes
    const_ids = []
    for conv_index, conv, _, _ in steps:
        wts = weights_to_ddr(conv.weight, cfg.p_ic, cfg.p_oc)
        prm = params_to_ddr(conv.bias, conv.m_pos, conv.m_neg, conv.shift, cfg.p_oc)
        ids = []
        for suffix, kind, blob in (("weights", SegmentKind.WEIGHTS, wts),
                                   ("params", SegmentKind.PARAMS, prm)):
            cursor = _round_up(cursor, alignment)
            ids.append(add(Segment(f"conv{conv_index:02d}.{suffix}", kind, cursor, len(blob),
                                   HOST_BEFORE, n, blob)))
            cursor += len(blob)
        const_ids.append(ids)
    arena = _round_up(cursor, alignment)

    # Run-time buffers: the input (read by layer 0), then each layer's output (read by the next
    # layer; the last one by the host).
    buffers = [(_fm_bytes(qnet.input_shape, 1, group), HOST_BEFORE, 0)]
    for i, step in enumerate(steps):
        out_shape = qnet.layers[step.out_index].out_shape
        buffers.append((_fm_bytes(out_shape, 4 if step.conv.output_int32 else 1, group), i, i + 1))
    offsets = allocate(buffers, alignment, reuse)
    input_data = None if x_q is None else fm_to_ddr(np.asarray(x_q, np.int8), group)
    buffer_ids = [add(Segment("input", SegmentKind.INPUT, arena + offsets[0], buffers[0][0],
                              HOST_BEFORE, 0, input_data))]
    for i, step in enumerate(steps):
        kind = SegmentKind.OUTPUT if i == n - 1 else SegmentKind.FEATURE_MAP
        size, first, last = buffers[i + 1]
        buffer_ids.append(add(Segment(f"layer{step.out_index:02d}.out", kind,
                                      arena + offsets[i + 1], size, first, last)))

    layers = []
    words = []
    for i, step in enumerate(steps):
        conv = step.conv
        in_seg, out_seg = segments[buffer_ids[i]], segments[buffer_ids[i + 1]]
        w_seg, p_seg = (segments[j] for j in const_ids[i])
        try:
            plan = plan_layer(cfg, conv.in_shape, conv.out_shape[0], conv.size, step.pool,
                              conv.output_int32, in_addr=in_seg.addr, out_addr=out_seg.addr,
                              w_addr=w_seg.addr, param_addr=p_seg.addr)
            words += plan.pack()
        except ValueError as exc:
            raise CompileError(f"layer {step.conv_index}: {exc}") from exc
        layers.append(ProgramLayer(step.conv_index, step.pool_index, tuple(conv.in_shape),
                                   tuple(qnet.layers[step.out_index].out_shape), conv.size,
                                   step.pool, conv.output_int32, buffer_ids[i],
                                   buffer_ids[i + 1], *const_ids[i]))
    desc = add(Segment("descriptors", SegmentKind.DESCRIPTORS, 0, desc_bytes, HOST_BEFORE, n,
                       np.asarray(words, "<u4").tobytes()))
    program = Program(cfg, layers, segments, desc, alignment)
    if program.footprint > memory_size:
        raise CompileError(f"the program needs {program.footprint} bytes of DDR, the memory has "
                           f"{memory_size}")
    return program
