"""The program file: round trip, every refusal, the documented layout, the CLI."""

from __future__ import annotations

import argparse
import re
import zlib
from pathlib import Path

import pytest

from firmware.cli import register_cli
from firmware.compiler import compile_network
from firmware.image import (
    CONFIG_ENTRY,
    HEADER,
    LAYER_ENTRY,
    SEGMENT_ENTRY,
    ProgramFormatError,
    load_program,
    write_program,
)
from hdl.descriptor import EngineConfig

CFG = EngineConfig()
DOC = Path(__file__).resolve().parent.parent / "docs" / "program-format.md"


@pytest.fixture()
def program_file(reference_quantized, tmp_path):
    qnet, x_q = reference_quantized
    program = compile_network(qnet, CFG, x_q=x_q)
    path = tmp_path / "prog.bin"
    write_program(program, path)
    return program, path


def _field(name):
    dtype, offset = HEADER.fields[name]
    return offset, offset + dtype.itemsize


def _patch(path, where, value):
    """Rewrite one header field (``where`` its name) or the bytes ``where = (start, stop)`` and
    re-sign the file with a CRC-32 computed here, as the documentation describes it (checksum
    field read as zero)."""
    blob = bytearray(path.read_bytes())
    start, stop = _field(where) if isinstance(where, str) else where
    blob[start:stop] = int(value).to_bytes(stop - start, "little")
    c0, c1 = _field("crc32")
    blob[c0:c1] = bytes(4)
    blob[c0:c1] = zlib.crc32(bytes(blob)).to_bytes(4, "little")
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("with_input", [True, False])
def test_round_trip(reference_quantized, tmp_path, with_input):
    qnet, x_q = reference_quantized
    for cfg in (CFG, EngineConfig(p_oc=32, acc_depth=512)):
        program = compile_network(qnet, cfg, x_q=x_q if with_input else None)
        path = tmp_path / "p.bin"
        write_program(program, path)
        loaded = load_program(path, cfg)
        assert loaded == program
        assert loaded.ddr_image() == program.ddr_image()
        assert (loaded.segment("input").data is not None) == with_input


def test_refuses_truncated_file(program_file):
    program, path = program_file
    blob = path.read_bytes()
    path.write_bytes(blob[:-5])
    with pytest.raises(ProgramFormatError,
                       match=f"{path}: truncated: the header says {len(blob)} bytes, the file "
                             f"has {len(blob) - 5}"):
        load_program(path, CFG)
    path.write_bytes(blob[:40])
    with pytest.raises(ProgramFormatError, match=f"{path}: truncated: 40 bytes, the header "
                                                 "alone is 64"):
        load_program(path, CFG)


def test_refuses_trailing_bytes(program_file):
    program, path = program_file
    blob = path.read_bytes()
    path.write_bytes(blob + b"\0\0\0")
    with pytest.raises(ProgramFormatError,
                       match=f"{path}: 3 trailing bytes: the header says {len(blob)} bytes, the "
                             f"file has {len(blob) + 3}"):
        load_program(path, CFG)
    # Bytes the header counts (and signs) but no table or payload accounts for.
    path.write_bytes(blob + bytes(8))
    _patch(path, "file_bytes", len(blob) + 8)
    with pytest.raises(ProgramFormatError,
                       match=f"{path}: 8 trailing bytes: the tables and payloads end at byte "
                             f"{len(blob)}, the header and the file say {len(blob) + 8}"):
        load_program(path, CFG)


def test_refuses_tables_or_payloads_outside_the_file(program_file):
    program, path = program_file
    blob = path.read_bytes()
    _patch(path, "segment_count", 100_000)
    with pytest.raises(ProgramFormatError,
                       match=rf"{path}: truncated: the tables \(\d+ engine parameters, "
                             rf"{len(program.layers)} layers, 100000 segments\) end at byte "
                             rf"\d+, the file has {len(blob)}"):
        load_program(path, CFG)
    # Point the last payload's offset past the end of the file.
    path.write_bytes(blob)
    index = max(i for i, seg in enumerate(program.segments) if seg.data is not None)
    seg = program.segments[index]
    n_config = int.from_bytes(blob[slice(*_field("config_count"))], "little")
    segment_table = (HEADER.itemsize + n_config * CONFIG_ENTRY.itemsize
                     + len(program.layers) * LAYER_ENTRY.itemsize)
    at = segment_table + index * SEGMENT_ENTRY.itemsize + SEGMENT_ENTRY.fields["data_offset"][1]
    _patch(path, (at, at + 4), len(blob))
    with pytest.raises(ProgramFormatError,
                       match=rf"{path}: segment '{seg.name}': payload at bytes {len(blob)}\.\."
                             rf"{len(blob) + seg.size}, outside the file's payload area "):
        load_program(path, CFG)


def test_refuses_wrong_magic(program_file):
    _, path = program_file
    path.write_bytes(b"NOTOWLET" + path.read_bytes()[8:])
    with pytest.raises(ProgramFormatError, match=f"{path}: not an Owlet program: magic "
                                                 "b'NOTOWLET', expected b'OWLETPRG'"):
        load_program(path, CFG)


def test_refuses_other_version(program_file):
    _, path = program_file
    _patch(path, "version", 1)  # version 1: layer entries without taps_packed
    with pytest.raises(ProgramFormatError,
                       match=f"{path}: format version 1, this Owlet reads version 2"):
        load_program(path, CFG)


def test_refuses_bad_checksum(program_file):
    program, path = program_file
    blob = bytearray(path.read_bytes())
    # One bit of one weight: only the checksum can tell.
    seg = program.segment("conv04.weights")
    offset = bytes(blob).index(seg.data)
    blob[offset + 100] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(ProgramFormatError, match=f"{path}: bad checksum: the header says CRC-32 "
                                                 "0x[0-9a-f]{8}, the contents give"):
        load_program(path, CFG)


def test_refuses_other_engine_configuration(program_file):
    _, path = program_file
    with pytest.raises(ProgramFormatError,
                       match=f"{path}: compiled for another engine configuration: "
                             r"acc_depth=1024 \(engine has 512\), p_oc=16 \(engine has 32\)"):
        load_program(path, EngineConfig(p_oc=32, acc_depth=512))


def test_refuses_other_descriptor_layout(program_file):
    _, path = program_file
    _patch(path, "descriptor_words", 11)
    with pytest.raises(ProgramFormatError, match=f"{path}: compiled for descriptor layout "
                                                 r"0x[0-9a-f]{8} \(11 words\)"):
        load_program(path, CFG)


def test_refuses_program_too_big_for_memory(program_file):
    program, path = program_file
    with pytest.raises(ProgramFormatError, match=f"{path}: needs {program.footprint} bytes of "
                                                 f"DDR, the memory has {program.footprint - 1}"):
        load_program(path, CFG, memory_size=program.footprint - 1)
    assert load_program(path, CFG, memory_size=program.footprint) == program


def test_refuses_header_inconsistent_with_segments(program_file):
    program, path = program_file
    _patch(path, "ddr_bytes", program.footprint - 8)
    with pytest.raises(ProgramFormatError, match=f"{path}: inconsistent: the header says "
                                                 f"{program.footprint - 8} DDR bytes"):
        load_program(path, CFG)


def test_refuses_unreadable_file(tmp_path):
    with pytest.raises(ProgramFormatError, match="cannot read the program"):
        load_program(tmp_path / "absent.bin", CFG)


def _doc_tables():
    """``{dtype name: [(offset, bytes, field)]}`` from the tables of docs/program-format.md."""
    tables, current = {}, None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## .*\(`(\w+)`, (\d+) bytes", line)
        if heading:
            current = tables.setdefault(heading.group(1), {"size": int(heading.group(2)),
                                                           "rows": []})
            continue
        row = re.match(r"\| (\d+) \| (\d+) \| [^|]+ \| `(\w+)` \|", line)
        if row and current is not None:
            current["rows"].append((int(row.group(1)), int(row.group(2)), row.group(3)))
        elif line.startswith("## "):
            current = None
    return tables


def test_documentation_matches_the_format():
    tables = _doc_tables()
    dtypes = {"HEADER": HEADER, "CONFIG_ENTRY": CONFIG_ENTRY, "LAYER_ENTRY": LAYER_ENTRY,
              "SEGMENT_ENTRY": SEGMENT_ENTRY}
    assert set(tables) == set(dtypes)
    for name, dtype in dtypes.items():
        assert tables[name]["size"] == dtype.itemsize, name
        fields = [(offset, sub.itemsize, field)
                  for field, (sub, offset) in dtype.fields.items()]
        assert tables[name]["rows"] == fields, name


def test_cli_compile(reference_quantized, tmp_path, capsys):
    qnet, _ = reference_quantized
    model = tmp_path / "model.npz"
    qnet.save(model)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    out = tmp_path / "prog.bin"
    args = parser.parse_args(["compile", str(model), "-o", str(out), "--p-oc", "32",
                              "--memory-size", "1M"])
    assert args.func(args) == 0
    program = load_program(out, EngineConfig(p_oc=32), memory_size=1 << 20)
    assert program == compile_network(qnet, EngineConfig(p_oc=32))
    text = capsys.readouterr().out
    for seg in program.segments:
        assert re.search(rf"{re.escape(seg.name)} .* {seg.addr:#x} +{seg.size} ", text)
    assert f"DDR footprint: {program.footprint} bytes" in text
    assert f"{program.footprint_without_reuse} bytes without reuse" in text
    # One descriptor row per engine layer: "index conv[+pool] ...".
    assert len(re.findall(r"^ *\d+ \d+(\+\d+)? ", text, re.MULTILINE)) == len(program.layers)
    with pytest.raises(SystemExit):
        parser.parse_args(["compile", str(model), "-o", str(out), "--memory-size", "lots"])
