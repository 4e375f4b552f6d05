"""The reference executor: the engine's job, done in numpy on a DDR image.

:func:`execute` walks a program's descriptor list *as it sits in DDR*: it unpacks each descriptor,
reads the input map, the weight stream and the requant table back from the addresses the
descriptor holds (with the inverses of :mod:`firmware.layout`), runs the golden model's
integer functions, and writes the output where the descriptor says. Agreement with
:func:`model.golden.forward_int` on every layer therefore proves that the compiler's addresses,
layouts and descriptor fields are consistent, before any RTL runs; the same executor can check a
cosimulation's DDR model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from amaranth import Shape

from firmware.layout import fm_from_ddr, fm_to_ddr, params_from_ddr, weights_from_ddr
from firmware.program import Program
from hdl.descriptor import DESCRIPTOR_WORDS, Descriptor, Pool
from model.golden import conv2d_int, maxpool_int, requantize

__all__ = [
    "descriptors",
    "execute",
    "unpack_descriptor",
]


def unpack_descriptor(words: Sequence[int]) -> dict:
    """Inverse of :func:`hdl.descriptor.pack_descriptor`: 32-bit words → field values.

    Parameters
    ----------
    words : :data:`DESCRIPTOR_WORDS` unsigned 32-bit integers

    Returns
    -------
    dict keyed by :class:`hdl.descriptor.Descriptor` field name; ``pad_value`` is sign-extended.
    """
    if len(words) != DESCRIPTOR_WORDS:
        raise ValueError(f"a descriptor is {DESCRIPTOR_WORDS} words, got {len(words)}")
    value = sum(int(w) << (32 * i) for i, w in enumerate(words))
    fields = {}
    for name, field in Descriptor.as_shape():
        v = (value >> field.offset) & ((1 << field.width) - 1)
        if Shape.cast(field.shape).signed and v >> (field.width - 1):
            v -= 1 << field.width
        fields[name] = v
    return fields


def descriptors(program: Program, mem=None) -> list[dict]:
    """Unpack the program's descriptor list from the DDR image ``mem``.

    Without ``mem``, from the descriptor segment's initial contents.
    """
    if mem is None:
        return [_descriptor_at(program.segments[program.descriptor_segment].data, 0, i)
                for i in range(len(program.layers))]
    return [_descriptor_at(mem, program.descriptor_addr, i) for i in range(len(program.layers))]


def _descriptor_at(raw, base: int, index: int) -> dict:
    size = 4 * DESCRIPTOR_WORDS
    return unpack_descriptor(np.frombuffer(bytes(raw[_within(raw, base + size * index, size)]),
                                           "<u4"))


def execute(program: Program, mem: bytearray,
            on_layer: Callable[[int, bytearray], None] | None = None) -> None:
    """Run every descriptor of ``program`` on the DDR image ``mem``, in place.

    Geometry, addresses, kernel, pool mode, output width and upsampling come from the
    descriptors read out of ``mem``; the program's layer table supplies only the real channel
    counts, which a descriptor holds rounded up to channel groups.

    Parameters
    ----------
    program : Program
    mem : bytearray
        DDR contents (:meth:`Program.ddr_image` plus the input), at least ``program.footprint``
        bytes.
    on_layer : callable(index, mem), optional
        Called after each layer, e.g. to check its output before a later layer reuses the buffer.
    """
    cfg = program.config
    for index, layer in enumerate(program.layers):
        # Fetched when the layer starts, as the sequencer does.
        d = _descriptor_at(mem, program.descriptor_addr, index)
        kernel = 3 if d["kernel3"] else 1
        c_pad, o_pad = d["in_groups"] * cfg.p_ic, d["og_passes"] * cfg.p_oc
        in_shape = (c_pad, d["height"], d["width"])
        x = fm_from_ddr(mem[_within(mem, d["in_addr"], c_pad * d["in_plane"])], in_shape,
                        group=cfg.p_ic)
        w = weights_from_ddr(mem[_within(mem, d["w_addr"], o_pad * c_pad * kernel * kernel)],
                             o_pad, c_pad, kernel, cfg.p_ic, cfg.p_oc)
        table = params_from_ddr(mem[_within(mem, d["param_addr"], 16 * o_pad)], o_pad)
        bias, m_pos, m_neg, shift = (a[:layer.out_shape[0]] for a in table)
        # Padded input channels hold zeros and meet zero weights; padded output channels
        # (zero table entries) are never requantized and leave the layout's zero padding.
        acc = conv2d_int(x, w[:layer.out_shape[0]], bias, 1, kernel // 2)
        if d["out_int32"]:
            y = acc.astype(np.int32)
        else:
            y = requantize(acc, m_pos, m_neg, shift)
            pool = Pool(d["pool"])
            if pool != Pool.NONE:
                y = maxpool_int(y, 2, 2 if pool == Pool.P2S2 else 1, 1)
        if y.shape[1:] != (d["out_height"], d["out_width"]):
            raise ValueError(f"descriptor {index}: output {y.shape[1:]} is not the descriptor's "
                             f"{(d['out_height'], d['out_width'])}")
        if d["upsample"]:
            y = _upsample_write(y)
        blob = fm_to_ddr(y, cfg.p_ic)
        beats = d["out_groups"] * d["out_plane"]
        if len(blob) != beats * cfg.p_ic:
            raise ValueError(f"descriptor {index}: {len(blob)} output bytes, the descriptor "
                             f"says {beats} beats of {cfg.p_ic}")
        mem[_within(mem, d["out_addr"], len(blob))] = blob
        if on_layer is not None:
            on_layer(index, mem)


def _upsample_write(y: np.ndarray) -> np.ndarray:
    """The map an ``upsample`` descriptor writes: output pixel (y, x) to its 2x2 block.

    Parameters
    ----------
    y : array, shape (C, H, W)

    Returns
    -------
    array of ``y.dtype``, shape (C, 2 H, 2 W): ``out[:, 2y + dy, 2x + dx] = y[:, y, x]``.
    """
    c, h, w = y.shape
    out = np.empty((c, 2 * h, 2 * w), y.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            out[:, dy::2, dx::2] = y
    return out


def _within(mem, addr: int, size: int) -> slice:
    """The slice ``[addr, addr + size)`` of ``mem``, refusing an access past its end."""
    if addr + size > len(mem):
        raise ValueError(f"access [{addr:#x}, {addr + size:#x}) beyond the {len(mem)}-byte DDR")
    return slice(addr, addr + size)
