"""End to end in software: compile → write → load → execute the descriptors in DDR → every
layer's DDR region equals the golden model's output of the darknet layer it holds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from firmware.compiler import compile_network
from firmware.executor import execute, unpack_descriptor
from firmware.image import load_program, write_program
from firmware.layout import params_from_ddr, params_to_ddr, weights_from_ddr, weights_to_ddr
from hdl.descriptor import Descriptor, EngineConfig, pack_descriptor
from model.darknet import parse_cfg
from model.golden import forward_int, quantize_input
from model.quant import quantize_network
from model.zoo import random_weights

# Odd sizes: a 2x2/2 pool on 13x11 (ceil), channel counts that are not multiples of 8 or 16,
# a 1x1 convolution followed by a 2x2/1 pool, and an int32 last layer without a region.
ODD_CFG = """[net]
width=11
height=13
channels=3

[convolutional]
batch_normalize=1
filters=12
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=20
size=1
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
filters=5
size=3
stride=1
pad=1
activation=linear
"""


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    path = tmp_path_factory.mktemp("odd") / "odd.cfg"
    path.write_text(ODD_CFG)
    net = random_weights(parse_cfg(path), seed=3)
    rng = np.random.default_rng(3)
    inputs = [rng.uniform(0, 1, net.input_shape).astype(np.float32) for _ in range(2)]
    return quantize_network(net, inputs), quantize_input(inputs[1])


def test_weight_and_param_layouts_invert():
    rng = np.random.default_rng(0)
    for p_ic, p_oc in ((8, 16), (8, 32), (16, 16)):
        for o, c, k in ((5, 3, 3), (40, 128, 1), (16, 8, 3)):
            w = rng.integers(-127, 128, (o, c, k, k), dtype=np.int8)
            o_pad, c_pad = -(-o // p_oc) * p_oc, -(-c // p_ic) * p_ic
            back = weights_from_ddr(weights_to_ddr(w, p_ic, p_oc), o_pad, c_pad, k, p_ic, p_oc)
            assert np.array_equal(back[:o, :c], w)
            assert not back[o:].any() and not back[:, c:].any()
            bias = rng.integers(-(1 << 31), 1 << 31, o).astype(np.int32)
            m_pos, m_neg = rng.integers(0, 65536, (2, o))
            shift = rng.integers(1, 48, o)
            table = params_from_ddr(params_to_ddr(bias, m_pos, m_neg, shift, p_oc), o_pad)
            for got, want in zip(table, (bias, m_pos, m_neg, shift), strict=True):
                assert np.array_equal(got[:o], want)
            # Padded channels requantize to 0 within the contract: zero multipliers, shift 1.
            bias_pad, m_pos_pad, m_neg_pad, shift_pad = (t[o:] for t in table)
            assert not (bias_pad.any() or m_pos_pad.any() or m_neg_pad.any())
            assert np.all(shift_pad == 1)


def test_unpack_inverts_pack():
    rng = np.random.default_rng(1)
    layout = Descriptor.as_shape()
    for _ in range(50):
        fields = {name: int(rng.integers(0, 1 << min(field.width, 62)))
                  for name, field in layout}
        fields["pool"] = int(rng.integers(0, 3))
        back = unpack_descriptor(pack_descriptor(fields))
        back["pad_value"] &= 0xFF  # unpacking sign-extends the signed field
        assert back == fields
    assert unpack_descriptor(pack_descriptor({**fields, "pad_value": 0x80}))["pad_value"] == -128


def _run_and_compare(qnet, x_q, cfg, reuse, tmp_path):
    """Compile, write, load, execute; compare every layer with the golden model."""
    golden = forward_int(qnet, x_q)
    path = tmp_path / "prog.bin"
    write_program(compile_network(qnet, cfg, reuse=reuse), path)
    program = load_program(path, cfg)
    mem = program.ddr_image()
    program.write_input(mem, x_q)
    checked = []

    def check(index, mem):
        layer = program.layers[index]
        got = program.read_output(mem, index)
        assert got.dtype == golden[layer.output_index].dtype
        assert np.array_equal(got, golden[layer.output_index]), f"layer {layer.output_index}"
        checked.append(layer.output_index)

    execute(program, mem, check)
    assert len(checked) == len(program.layers)
    if not reuse:
        # Every layer's output is still in DDR after the run.
        for index in range(len(program.layers)):
            check(index, mem)
    else:
        check(len(program.layers) - 1, mem)
    # Every darknet layer the engine runs is checked, through its own output or its pool's.
    engine_layers = [i for i, layer in enumerate(qnet.layers) if layer.kind != "region"]
    fused_convs = {layer.conv_index for layer in program.layers if layer.pool_index is not None}
    assert sorted(set(checked) | fused_convs) == engine_layers


@pytest.mark.parametrize("reuse", [True, False])
def test_reference_network_bit_exact(reference_quantized, tmp_path, reuse):
    qnet, x_q = reference_quantized
    _run_and_compare(qnet, x_q, EngineConfig(), reuse, tmp_path)


@pytest.mark.parametrize("cfg", [EngineConfig(), EngineConfig(p_oc=32, acc_depth=64,
                                                              ibuf_depth=128)])
def test_odd_shapes_bit_exact(odd, tmp_path, cfg):
    qnet, x_q = odd
    _run_and_compare(qnet, x_q, cfg, True, tmp_path)


def test_executor_reads_the_descriptors_in_ddr(reference_quantized):
    """The executor follows the descriptors, not the layer table: point layer 0 at another
    input (a copy of the real input shifted by one row) and its output must change."""
    qnet, x_q = reference_quantized
    program = compile_network(qnet, EngineConfig(), x_q=x_q)
    mem = program.ddr_image()
    spare = len(mem)
    mem += bytes(program.segment("input").size)
    shifted = np.roll(x_q, 1, axis=1)
    program.write_input(mem, shifted)
    mem[spare:] = mem[program.segment("input").addr:program.segment("input").end]
    program.write_input(mem, x_q)
    words = np.frombuffer(bytes(mem[program.descriptor_addr:program.descriptor_addr + 4]), "<u4")
    assert words[0] == program.segment("input").addr  # in_addr is word 0
    mem[program.descriptor_addr:program.descriptor_addr + 4] = spare.to_bytes(4, "little")
    seen = {}
    execute(program, mem, lambda index, m: seen.setdefault(index, program.read_output(m, index)))
    golden_shifted = forward_int(qnet, shifted)
    assert np.array_equal(seen[0], golden_shifted[program.layers[0].output_index])


@pytest.mark.parametrize(("make", "got"), [
    (lambda x: x[:, 1:], "int8 array of shape (3, 95, 96)"),
    (lambda x: x.astype(np.int16), "int16 array of shape (3, 96, 96)"),  # would wrap silently
    (lambda x: x / 127, "float64 array of shape (3, 96, 96)"),
    (lambda x: x.tolist(), "list"),
])
def test_write_input_refuses_another_shape_or_type(reference_quantized, make, got):
    qnet, x_q = reference_quantized
    program = compile_network(qnet, EngineConfig())
    mem = program.ddr_image()
    before = bytes(mem)
    with pytest.raises(ValueError, match=re.escape(f"write_input: the input is a {got}, the "
                                                   "program's first layer (darknet 0) takes int8 "
                                                   "(3, 96, 96) (C, H, W)")):
        program.write_input(mem, make(x_q))
    assert bytes(mem) == before


def test_write_input_refuses_a_memory_that_ends_before_the_input(reference_quantized):
    qnet, x_q = reference_quantized
    program = compile_network(qnet, EngineConfig())
    seg = program.segment("input")
    short = bytearray(seg.end - 1)
    with pytest.raises(ValueError, match=f"the memory has {seg.end - 1} bytes, the input segment "
                                         f"'input' ends at {seg.end}"):
        program.write_input(short, x_q)
    assert len(short) == seg.end - 1  # not grown by a slice assignment
