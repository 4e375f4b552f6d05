"""The compiled program: engine layers, the DDR memory map and the DDR image it describes.

A :class:`Program` is what :func:`firmware.compiler.compile_network` produces and
:func:`firmware.image.load_program` reads back. It says where every byte the engine touches lives
in DDR (:class:`Segment`), which darknet layers each engine layer covers (:class:`ProgramLayer`),
and what the initial DDR contents are (descriptors, weights, requant tables, optionally the input).

Feature maps use the engine's layouts (:mod:`firmware.layout`): int8 maps ``[C/g][H][W][g]`` and the
int32 output ``[O/g][H][W][g]`` with ``g = p_ic`` channels per 64-bit beat group.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from firmware.layout import fm_from_ddr, fm_to_ddr, pack_taps
from hdl.descriptor import EngineConfig, Pool

__all__ = [
    "HOST_BEFORE",
    "Program",
    "ProgramLayer",
    "Segment",
    "SegmentKind",
    "map_addr",
]

#: ``Segment.first_layer`` of data the host writes before the run (constants, the input).
HOST_BEFORE = -1


class SegmentKind(enum.IntEnum):
    """What a DDR segment holds (its code in the image's segment table)."""

    DESCRIPTORS = 0
    WEIGHTS = 1
    PARAMS = 2
    INPUT = 3
    FEATURE_MAP = 4
    OUTPUT = 5


@dataclass(frozen=True)
class Segment:
    """One region of DDR.

    Attributes
    ----------
    name : str
        ASCII, at most 24 bytes (``"input"``, ``"conv00.weights"``, ``"layer01.out"``, ...).
    kind : SegmentKind
    addr, size : int
        Byte address and length in DDR.
    first_layer, last_layer : int
        Program-layer indices of the first writer and the last reader: the buffer is live over
        the closed interval ``[first_layer, last_layer]``. :data:`HOST_BEFORE` as the first layer
        means the host writes it before the run; ``n`` (the number of program layers) as the
        last, that the host reads it after the run (constants span both).
        Two segments may share addresses only if these intervals are disjoint.
    data : bytes or None
        Initial contents (``size`` bytes), or None for space the engine (or host) fills at run
        time.
    """

    name: str
    kind: SegmentKind
    addr: int
    size: int
    first_layer: int
    last_layer: int
    data: bytes | None = None

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.addr + self.size


@dataclass(frozen=True)
class ProgramLayer:
    """One engine layer: a convolution, optionally fused with the maxpool that follows it, or with
    the x2 upsample that follows it.

    Attributes
    ----------
    conv_index : int or None
        Darknet index of the convolution; None for an exact identity 1x1 convolution that carries
        a maxpool whose input is also read elsewhere (``docs/engine.md``, "Route and upsample").
    pool_index : int or None
        Darknet index of the fused maxpool. When set, the convolution's own (un-pooled) output
        never reaches DDR: the output segment holds the golden model's output of ``pool_index``.
    in_shape, out_shape : (C, H, W)
        Engine input and output (after pooling or upsampling) shapes, real channel counts.
    kernel : 1 or 3
    pool : Pool
    out_int32 : bool
        Writes int32 accumulators (a detection head's input, docs/fixed-point.md §7).
    input_segment, output_segment, weight_segment, param_segment : int
        Indices into :attr:`Program.segments`.
    upsample : bool
        The output is written nearest-upsampled x2: the output segment holds the golden model's
        output of the upsample layer that follows (``output_index``).
    input_group, output_group : int
        First channel group of the input (output) map within its segment: a route's sources sit
        side by side in one buffer, and an identity layer covers ``p_oc`` channels of its map.
    taps_packed : bool
        The layer reads the network input tap-packed (:func:`firmware.layout.pack_taps`) and
        runs on the engine as a 1x1 convolution of :attr:`engine_in_shape` (``docs/engine.md``,
        "Tap packing"); ``in_shape`` and ``kernel`` stay the darknet layer's.
    """

    conv_index: int | None
    pool_index: int | None
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    pool: Pool
    out_int32: bool
    input_segment: int
    output_segment: int
    weight_segment: int
    param_segment: int
    upsample: bool = False
    input_group: int = 0
    output_group: int = 0
    taps_packed: bool = False

    @property
    def engine_in_shape(self) -> tuple[int, int, int]:
        """The map the engine reads: ``in_shape``, or ``K·K`` times its channels tap-packed."""
        c, h, w = self.in_shape
        return (c * self.kernel ** 2, h, w) if self.taps_packed else self.in_shape

    def engine_input(self, x: np.ndarray) -> np.ndarray:
        """The map the engine reads for the layer's input ``x`` (C, H, W): ``x``, or tap-packed."""
        return pack_taps(x, self.kernel) if self.taps_packed else x

    @property
    def output_index(self) -> int:
        """Darknet index whose golden output (channels from ``output_group``) the layer writes."""
        index = self.conv_index if self.pool_index is None else self.pool_index
        return index + 1 if self.upsample else index

    @property
    def covers(self) -> str:
        """The darknet layers it runs, for tables: ``"8+9"`` (conv + pool), ``"18+19"`` (conv +
        upsample), ``"id+9"`` (identity convolution + pool)."""
        parts = ["id" if self.conv_index is None else str(self.conv_index)]
        if self.pool_index is not None:
            parts.append(str(self.pool_index))
        if self.upsample:
            parts.append(str(self.output_index))
        return "+".join(parts)

    @property
    def out_dtype(self) -> type:
        """numpy type of the output map: int32 accumulators or int8 activations."""
        return np.int32 if self.out_int32 else np.int8


@dataclass(frozen=True)
class Program:
    """A compiled network for one engine configuration.

    Attributes
    ----------
    config : EngineConfig
        The engine the program was compiled for.
    layers : list of ProgramLayer
        In execution order; descriptor ``i`` (at ``descriptor_addr + i * 4 * DESCRIPTOR_WORDS``)
        runs ``layers[i]``.
    segments : list of Segment
        The memory map, sorted by address (shared addresses: by first layer).
    descriptor_segment : int
        Index of the descriptor list in ``segments``.
    alignment : int
        Every segment starts (and every feature-map buffer is sized) on this many bytes.
    """

    config: EngineConfig
    layers: list[ProgramLayer]
    segments: list[Segment]
    descriptor_segment: int
    alignment: int

    @property
    def descriptor_addr(self) -> int:
        return self.segments[self.descriptor_segment].addr

    @property
    def footprint(self) -> int:
        """DDR bytes the program needs: one past its highest segment."""
        return max(s.end for s in self.segments)

    @property
    def footprint_without_reuse(self) -> int:
        """DDR bytes if no two run-time buffers shared addresses: the constants, then the input,
        feature-map and output buffers end to end in table order, each starting on
        :attr:`alignment` (what the compiler lays out with ``reuse=False``)."""
        end = max(s.end for s in self.segments if s.kind not in _RUNTIME_KINDS)
        for s in self.segments:
            if s.kind in _RUNTIME_KINDS:
                end = _round_up(end, self.alignment) + s.size
        return end

    def segment(self, name: str) -> Segment:
        """The segment called ``name``."""
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(f"program has no segment '{name}'")

    def ddr_image(self) -> bytearray:
        """DDR contents before the run: ``footprint`` bytes, payloads placed, the rest zero."""
        mem = bytearray(self.footprint)
        for s in self.segments:
            if s.data is not None:
                mem[s.addr:s.end] = s.data
        return mem

    def write_input(self, mem: bytearray, x_q: np.ndarray) -> None:
        """Place the int8 network input ``x_q`` (C, H, W) in ``mem`` at the input segment.

        Raises
        ------
        ValueError
            ``x_q`` is not an int8 array of the first layer's input shape (any other integer type
            would be wrapped silently, a float one truncated: quantize with
            :func:`model.golden.quantize_input`), or ``mem`` ends before the input segment (a
            slice assignment would grow it instead).
        """
        seg = self.segments[self.layers[0].input_segment]
        want = self.layers[0].in_shape
        if not isinstance(x_q, np.ndarray) or x_q.dtype != np.int8 or x_q.shape != want:
            got = (f"{x_q.dtype} array of shape {x_q.shape}" if isinstance(x_q, np.ndarray)
                   else type(x_q).__name__)
            raise ValueError(f"write_input: the input is a {got}, the program's first layer "
                             f"(darknet {self.layers[0].conv_index}) takes int8 {want} (C, H, W)")
        if len(mem) < seg.end:
            raise ValueError(f"write_input: the memory has {len(mem)} bytes, the input segment "
                             f"'{seg.name}' ends at {seg.end}")
        mem[seg.addr:seg.end] = fm_to_ddr(self.layers[0].engine_input(x_q), self.config.p_ic)

    def read_output(self, mem, index: int) -> np.ndarray:
        """Layer ``index``'s output from ``mem``: int8 or int32 array ``layers[index].out_shape``.

        Compare it with the golden model's output of darknet layer ``layers[index].output_index``,
        channels :meth:`output_channels` (an identity layer writes a slice).
        """
        layer = self.layers[index]
        seg = self.segments[layer.output_segment]
        addr = map_addr(seg, layer.output_group, layer.out_shape, self.config.p_ic,
                        layer.out_dtype)
        return fm_from_ddr(mem[addr:seg.end], layer.out_shape, layer.out_dtype, self.config.p_ic)

    def output_channels(self, index: int) -> slice:
        """The channels of darknet layer ``layers[index].output_index``'s map that layer ``index``
        writes: all of them, except for an identity layer, which writes ``p_oc`` channels of a
        pool's output (its slice starts as many groups after the first slice's)."""
        layer = self.layers[index]
        first = min(other.output_group for other in self.layers
                    if other.output_index == layer.output_index)
        c0 = (layer.output_group - first) * self.config.p_ic
        return slice(c0, c0 + layer.out_shape[0])

    def read_input(self, mem, index: int) -> np.ndarray:
        """The int8 map layer ``index`` reads from ``mem``, shape ``layers[index].in_shape``: the
        network input, a previous layer's output, or a route's concatenation. Of a tap-packed
        input, the centre tap: the input itself."""
        layer = self.layers[index]
        seg = self.segments[layer.input_segment]
        shape = layer.engine_in_shape
        addr = map_addr(seg, layer.input_group, shape, self.config.p_ic, np.int8)
        x = fm_from_ddr(mem[addr:seg.end], shape, np.int8, self.config.p_ic)
        taps = layer.kernel ** 2 if layer.taps_packed else 1
        return x[taps // 2::taps]  # channel c's centre tap is channel c·taps + taps // 2

    @property
    def outputs(self) -> list[int]:
        """Indices of the layers whose output the host reads after the run (the int32 maps the
        detection heads decode), in execution order."""
        return [i for i, layer in enumerate(self.layers)
                if self.segments[layer.output_segment].kind == SegmentKind.OUTPUT]

    def read_outputs(self, mem) -> dict[int, np.ndarray]:
        """Every output the host reads (:attr:`outputs`), keyed by darknet index
        (``output_index``): the input of :func:`model.pipeline.decode_engine_output`."""
        return {self.layers[i].output_index: self.read_output(mem, i) for i in self.outputs}


_RUNTIME_KINDS = (SegmentKind.INPUT, SegmentKind.FEATURE_MAP, SegmentKind.OUTPUT)


def map_addr(segment: Segment, group: int, shape: tuple[int, int, int], p_ic: int,
             dtype) -> int:
    """DDR address of a feature map that starts at channel group ``group`` of ``segment``.

    Parameters
    ----------
    segment : Segment
        The buffer, in the layout ``[C/p_ic][H][W][p_ic]``.
    group : int
        First channel group of the map within the buffer (a route's later source, an identity
        layer's slice).
    shape : (C, H, W)
        Of the map; ``H * W * p_ic * itemsize`` bytes is one channel group.
    dtype : int8 or int32
    """
    _, h, w = shape
    return segment.addr + group * h * w * p_ic * np.dtype(dtype).itemsize


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align
