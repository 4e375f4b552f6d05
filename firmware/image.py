"""The program file: a compiled :class:`~firmware.program.Program` as one binary image.

Layout (all little-endian; ``docs/program-format.md`` gives every field's offset and width)::

    header (64 B) | engine config table | layer table | segment table | payloads (8-byte aligned)

The header carries a magic, a format version, a CRC-32 over the whole file, the DDR bytes the
program needs and the descriptor list's address and count. The loader refuses a file that is
not a program, has another version, is truncated or damaged, was compiled for another engine
configuration or descriptor layout, or does not fit the memory; each message names the file and
what was expected against what was found.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np

from firmware.compiler import DEFAULT_MEMORY_SIZE
from firmware.program import Program, ProgramLayer, Segment, SegmentKind
from hdl.descriptor import DESCRIPTOR_WORDS, Descriptor, EngineConfig, Pool

__all__ = [
    "CONFIG_ENTRY",
    "FORMAT_VERSION",
    "HEADER",
    "LAYER_ENTRY",
    "MAGIC",
    "SEGMENT_ENTRY",
    "ProgramFormatError",
    "descriptor_layout_id",
    "load_program",
    "program_from_bytes",
    "program_to_bytes",
    "write_program",
]

MAGIC = b"OWLETPRG"
FORMAT_VERSION = 2
_PAYLOAD_ALIGN = 8


def _struct(fields: list[tuple[str, str, int]], itemsize: int) -> np.dtype:
    """A packed little-endian record: ``(name, numpy format, byte offset)`` per field."""
    names, formats, offsets = zip(*fields, strict=True)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": itemsize})


#: File header, 64 bytes at offset 0.
HEADER = _struct([
    ("magic", "S8", 0),
    ("version", "<u4", 8),
    ("crc32", "<u4", 12),
    ("file_bytes", "<u8", 16),
    ("ddr_bytes", "<u8", 24),
    ("alignment", "<u4", 32),
    ("descriptor_addr", "<u4", 36),
    ("descriptor_count", "<u4", 40),
    ("descriptor_words", "<u4", 44),
    ("descriptor_layout", "<u4", 48),
    ("config_count", "<u4", 52),
    ("segment_count", "<u4", 56),
    ("descriptor_segment", "<u4", 60),
], 64)
#: One engine parameter: its :class:`~hdl.descriptor.EngineConfig` field name and value.
CONFIG_ENTRY = _struct([("name", "S20", 0), ("value", "<u4", 20)], 24)
#: One engine layer (descriptor ``i`` runs layer ``i``).
LAYER_ENTRY = _struct([
    ("conv_index", "<i2", 0),
    ("pool_index", "<i2", 2),
    ("kernel", "u1", 4),
    ("pool", "u1", 5),
    ("out_int32", "u1", 6),
    ("upsample", "u1", 7),
    ("in_shape", ("<u2", (3,)), 8),
    ("out_shape", ("<u2", (3,)), 14),
    ("input_segment", "<u2", 20),
    ("output_segment", "<u2", 22),
    ("weight_segment", "<u2", 24),
    ("param_segment", "<u2", 26),
    ("input_group", "<u2", 28),
    ("output_group", "<u2", 30),
    ("taps_packed", "u1", 32),
], 36)
#: One DDR segment of the memory map.
SEGMENT_ENTRY = _struct([
    ("name", "S24", 0),
    ("kind", "u1", 24),
    ("has_data", "u1", 25),
    ("first_layer", "<i4", 28),
    ("last_layer", "<i4", 32),
    ("addr", "<u4", 36),
    ("size", "<u4", 40),
    ("data_offset", "<u4", 44),
], 48)
_CRC = slice(HEADER.fields["crc32"][1], HEADER.fields["crc32"][1] + 4)


class ProgramFormatError(ValueError):
    """A program file that this engine must not run; the message names the file and the field."""


def descriptor_layout_id() -> int:
    """CRC-32 of the descriptor's field names, offsets and widths.

    A program packed for another layout (fields added, moved or resized in
    :class:`hdl.descriptor.Descriptor`) would be misread by the engine: the loader refuses it.
    """
    text = ";".join(f"{name}:{field.offset}:{field.width}"
                    for name, field in Descriptor.as_shape())
    return zlib.crc32(text.encode())


def _config_items(cfg: EngineConfig) -> list[tuple[str, int]]:
    return [(f.name, int(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)]


def _checksum(blob) -> int:
    """CRC-32 of the file with the checksum field read as zero."""
    crc = zlib.crc32(blob[:_CRC.start])
    crc = zlib.crc32(b"\0\0\0\0", crc)
    return zlib.crc32(blob[_CRC.stop:], crc)


def _align(value: int) -> int:
    return -(-value // _PAYLOAD_ALIGN) * _PAYLOAD_ALIGN


def program_to_bytes(program: Program) -> bytes:
    """Serialize ``program`` into the documented file format."""
    items = _config_items(program.config)
    for name, _ in items:
        if len(name) > CONFIG_ENTRY["name"].itemsize:
            raise ValueError(f"engine parameter name '{name}' longer than the table's 20 bytes")
    config = np.array(items, CONFIG_ENTRY)
    layers = np.zeros(len(program.layers), LAYER_ENTRY)
    for entry, layer in zip(layers, program.layers, strict=True):
        entry["conv_index"] = -1 if layer.conv_index is None else layer.conv_index
        entry["pool_index"] = -1 if layer.pool_index is None else layer.pool_index
        entry["kernel"], entry["pool"] = layer.kernel, layer.pool.value
        entry["out_int32"], entry["upsample"] = layer.out_int32, layer.upsample
        entry["taps_packed"] = layer.taps_packed
        entry["in_shape"], entry["out_shape"] = layer.in_shape, layer.out_shape
        for name in ("input_segment", "output_segment", "weight_segment", "param_segment",
                     "input_group", "output_group"):
            entry[name] = getattr(layer, name)
    segments = np.zeros(len(program.segments), SEGMENT_ENTRY)
    offset = _align(HEADER.itemsize + config.nbytes + layers.nbytes + segments.nbytes)
    payloads = []
    for entry, seg in zip(segments, program.segments, strict=True):
        if len(seg.name.encode("ascii")) > SEGMENT_ENTRY["name"].itemsize:
            raise ValueError(f"segment name '{seg.name}' longer than the table's 24 bytes")
        entry["name"], entry["kind"] = seg.name.encode("ascii"), seg.kind.value
        entry["first_layer"], entry["last_layer"] = seg.first_layer, seg.last_layer
        entry["addr"], entry["size"] = seg.addr, seg.size
        if seg.data is not None:
            entry["has_data"], entry["data_offset"] = 1, offset
            payloads.append((offset, seg.data))
            offset = _align(offset + len(seg.data))
    header = np.zeros((), HEADER)
    header["magic"], header["version"] = MAGIC, FORMAT_VERSION
    header["file_bytes"], header["ddr_bytes"] = offset, program.footprint
    header["alignment"] = program.alignment
    header["descriptor_addr"] = program.descriptor_addr
    header["descriptor_count"] = len(program.layers)
    header["descriptor_words"] = DESCRIPTOR_WORDS
    header["descriptor_layout"] = descriptor_layout_id()
    header["config_count"], header["segment_count"] = len(config), len(segments)
    header["descriptor_segment"] = program.descriptor_segment
    blob = bytearray(offset)
    tables = header.tobytes() + config.tobytes() + layers.tobytes() + segments.tobytes()
    blob[:len(tables)] = tables
    for at, data in payloads:
        blob[at:at + len(data)] = data
    blob[_CRC] = _checksum(blob).to_bytes(4, "little")
    return bytes(blob)


def write_program(program: Program, path: str | Path) -> None:
    """Write ``program`` to ``path`` (docs/program-format.md)."""
    Path(path).write_bytes(program_to_bytes(program))


def load_program(path: str | Path, cfg: EngineConfig,
                 memory_size: int = DEFAULT_MEMORY_SIZE) -> Program:
    """Read a program file for the engine ``cfg`` with ``memory_size`` bytes of DDR.

    Raises
    ------
    ProgramFormatError
        Wrong magic or version, truncated file or trailing bytes (after the header's size or
        after the last payload), a payload outside the file, bad checksum, another descriptor
        layout or engine configuration, or a program larger than the memory.
    """
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise ProgramFormatError(f"{path}: cannot read the program ({exc})") from exc
    return program_from_bytes(blob, cfg, memory_size, source=str(path))


def program_from_bytes(blob: bytes, cfg: EngineConfig, memory_size: int = DEFAULT_MEMORY_SIZE,
                       source: str = "<program>") -> Program:
    """Parse and check a program image held in memory; see :func:`load_program`."""
    def refuse(message):
        return ProgramFormatError(f"{source}: {message}")

    if len(blob) < HEADER.itemsize:
        raise refuse(f"truncated: {len(blob)} bytes, the header alone is {HEADER.itemsize}")
    header = np.frombuffer(blob, HEADER, count=1)[0]
    if header["magic"] != MAGIC:
        raise refuse(f"not an Owlet program: magic {bytes(header['magic'])!r}, expected {MAGIC!r}")
    if header["version"] != FORMAT_VERSION:
        raise refuse(f"format version {header['version']}, this Owlet reads version "
                     f"{FORMAT_VERSION}: recompile the model")
    if header["file_bytes"] > len(blob):
        raise refuse(f"truncated: the header says {header['file_bytes']} bytes, the file has "
                     f"{len(blob)}")
    if header["file_bytes"] < len(blob):
        raise refuse(f"{len(blob) - header['file_bytes']} trailing bytes: the header says "
                     f"{header['file_bytes']} bytes, the file has {len(blob)}")
    crc = _checksum(blob)
    if crc != header["crc32"]:
        raise refuse(f"bad checksum: the header says CRC-32 {header['crc32']:#010x}, the "
                     f"contents give {crc:#010x}")
    layout = (int(header["descriptor_words"]), int(header["descriptor_layout"]))
    if layout != (DESCRIPTOR_WORDS, descriptor_layout_id()):
        raise refuse(f"compiled for descriptor layout {layout[1]:#010x} ({layout[0]} words), "
                     f"the engine's is {descriptor_layout_id():#010x} ({DESCRIPTOR_WORDS} "
                     "words): recompile the model")

    counts = {"engine parameters": (CONFIG_ENTRY, int(header["config_count"])),
              "layers": (LAYER_ENTRY, int(header["descriptor_count"])),
              "segments": (SEGMENT_ENTRY, int(header["segment_count"]))}
    tables_end = HEADER.itemsize + sum(entry.itemsize * n for entry, n in counts.values())
    if tables_end > len(blob):
        listed = ", ".join(f"{n} {what}" for what, (_, n) in counts.items())
        raise refuse(f"truncated: the tables ({listed}) end at byte {tables_end}, the file has "
                     f"{len(blob)}")
    at, tables = HEADER.itemsize, []
    for entry, n in counts.values():
        tables.append(np.frombuffer(blob, entry, n, at))
        at += entry.itemsize * n
    config, layers, segments = tables
    # Every byte belongs to a table or a payload (each padded to 8 bytes, as written): payloads
    # beyond the file would be cut short silently, bytes after the last one would be ignored.
    content_end = _align(tables_end)
    for e in segments:
        if e["has_data"]:
            stop = int(e["data_offset"]) + int(e["size"])
            if e["data_offset"] < tables_end or stop > len(blob):
                raise refuse(f"segment '{e['name'].decode('ascii', 'replace')}': payload at "
                             f"bytes {e['data_offset']}..{stop}, outside the file's payload area "
                             f"{tables_end}..{len(blob)}")
            content_end = max(content_end, _align(stop))
    if content_end != len(blob):
        raise refuse(f"{len(blob) - content_end} trailing bytes: the tables and payloads end "
                     f"at byte {content_end}, the header and the file say {len(blob)}")

    compiled = {e["name"].decode("ascii"): int(e["value"]) for e in config}
    expected = dict(_config_items(cfg))
    differ = sorted(k for k in compiled.keys() | expected.keys()
                    if compiled.get(k) != expected.get(k))
    if differ:
        raise refuse("compiled for another engine configuration: "
                     + ", ".join(f"{k}={compiled.get(k, 'absent')} (engine has "
                                 f"{expected.get(k, 'absent')})" for k in differ))
    if header["ddr_bytes"] > memory_size:
        raise refuse(f"needs {header['ddr_bytes']} bytes of DDR, the memory has {memory_size}")

    program = Program(
        config=cfg,
        layers=[ProgramLayer(
            conv_index=None if e["conv_index"] < 0 else int(e["conv_index"]),
            pool_index=None if e["pool_index"] < 0 else int(e["pool_index"]),
            in_shape=tuple(int(v) for v in e["in_shape"]),
            out_shape=tuple(int(v) for v in e["out_shape"]),
            kernel=int(e["kernel"]), pool=Pool(int(e["pool"])), out_int32=bool(e["out_int32"]),
            input_segment=int(e["input_segment"]), output_segment=int(e["output_segment"]),
            weight_segment=int(e["weight_segment"]), param_segment=int(e["param_segment"]),
            upsample=bool(e["upsample"]), input_group=int(e["input_group"]),
            output_group=int(e["output_group"]), taps_packed=bool(e["taps_packed"]),
        ) for e in layers],
        segments=[Segment(
            name=e["name"].decode("ascii"), kind=SegmentKind(int(e["kind"])),
            addr=int(e["addr"]), size=int(e["size"]), first_layer=int(e["first_layer"]),
            last_layer=int(e["last_layer"]),
            data=blob[e["data_offset"]:e["data_offset"] + e["size"]] if e["has_data"] else None,
        ) for e in segments],
        descriptor_segment=int(header["descriptor_segment"]),
        alignment=int(header["alignment"]),
    )
    if (program.footprint, program.descriptor_addr) != (header["ddr_bytes"],
                                                        header["descriptor_addr"]):
        raise refuse(f"inconsistent: the header says {header['ddr_bytes']} DDR bytes and "
                     f"descriptors at {header['descriptor_addr']:#x}, the segment table gives "
                     f"{program.footprint} and {program.descriptor_addr:#x}")
    return program
