"""YOLOv3-tiny through the compiler and the numpy executor: routes as memory layout, upsample on
the producer's write, a map read by a maxpool and a route, two int32 heads.

Oracles: the golden model (:func:`model.golden.forward_int`, :func:`model.pipeline.infer_int8`)
layer by layer, ``np.repeat`` for the upsampled write, an independent pairwise loop for the memory
map, and worked values for the identity convolution.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_yolov3_tiny import require_weights

from firmware.compiler import CompileError, compile_network
from firmware.executor import descriptors, execute
from firmware.perf import predict_program
from hdl.descriptor import EngineConfig, Pool
from model.darknet import load_darknet, parse_cfg
from model.golden import forward_int, quantize_input, requantize
from model.pipeline import decode_engine_output, infer_int8, prepare_input
from model.quant import quantize_network
from model.zoo import DOG_IMAGE, YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS, random_weights

CFG = EngineConfig()

_YOLO = """
[yolo]
mask = {mask}
anchors = 10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes = 2
num = 6
"""
#: YOLOv3-tiny's shape at 64x64: layer 4 (40 channels: two full identity slices and one of 8)
#: feeds the maxpool 5 and the route 15; route 12 is an alias; 13 is upsampled into route 15.
SMALL_YOLO = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=40
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=64
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
batch_normalize=1
filters=32
size=1
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=64
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear
""" + _YOLO.format(mask="3,4,5") + """
[route]
layers = -4

[convolutional]
batch_normalize=1
filters={up_filters}
size=1
stride=1
pad=1
activation=leaky

[upsample]
stride=2

[route]
layers = -1, 4

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear
""" + _YOLO.format(mask="0,1,2")


def _quantized(tmp_path, up_filters=16):
    path = tmp_path / f"small-yolo-{up_filters}.cfg"
    path.write_text(SMALL_YOLO.replace("{up_filters}", str(up_filters)))
    net = random_weights(parse_cfg(path), seed=3)
    x, size = prepare_input(DOG_IMAGE, net.input_shape)
    return quantize_network(net, [x]), x, size


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The reduced network quantized on dog.png: ``(qnet, x float input, image size, x_q,
    forward_int outputs)``."""
    qnet, x, size = _quantized(tmp_path_factory.mktemp("small-yolo"))
    x_q = quantize_input(x)
    return qnet, x, size, x_q, forward_int(qnet, x_q)


@pytest.fixture(scope="module")
def real():
    """The published YOLOv3-tiny quantized on dog.png (about 30 s): ``(qnet, x, size, x_q,
    forward_int outputs)``."""
    require_weights()
    net = load_darknet(YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS)
    x, size = prepare_input(DOG_IMAGE, net.input_shape)
    qnet = quantize_network(net, [x])
    x_q = quantize_input(x)
    return qnet, x, size, x_q, forward_int(qnet, x_q)


def _assert_map_equal(name, expected, actual):
    """Bit-exact, or a message naming the layer and the first differing (channel, row, col)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, \
        f"{name}: {actual.dtype} {actual.shape}, expected {expected.dtype} {expected.shape}"
    diff = np.argwhere(actual != expected)
    if len(diff):
        c, y, x = diff[0]
        pytest.fail(f"{name}: {len(diff)} values differ, first at channel {c}, row {y}, col {x}: "
                    f"expected {expected[c, y, x]}, actual {actual[c, y, x]}")


def _run_checking_every_layer(program, qnet, x_q, golden):
    """Execute ``program``; as each layer completes (before a later one may reuse a buffer),
    compare its output and its input region with the golden model. Returns the DDR image and the
    darknet indices checked."""
    mem = program.ddr_image()
    program.write_input(mem, x_q)
    checked = set()

    def check(index, m):
        layer = program.layers[index]
        channels = program.output_channels(index)
        _assert_map_equal(f"layer {layer.output_index} (program layer {index}, {layer.covers})",
                          golden[layer.output_index][channels], program.read_output(m, index))
        checked.add(layer.output_index)
        # Darknet convolutions and maxpools read the layer before them (a route, for instance).
        source = (layer.pool_index if layer.conv_index is None else layer.conv_index) - 1
        expected_in = x_q if source < 0 else golden[source]
        if layer.conv_index is None:
            expected_in = expected_in[channels]
        _assert_map_equal(f"input of program layer {index} ({layer.covers}): layer {source}",
                          expected_in, program.read_input(m, index))
        checked.add(source)

    execute(program, mem, check)
    return mem, checked


def _in_ddr(qnet):
    """Darknet layers whose output must be in DDR (-1: the input): all but the yolo heads and the
    convolutions whose only reader is the maxpool or upsample fused after them."""
    routed = {i for layer in qnet.layers if layer.kind == "route" for i in layer.layers}
    fused = {i for i, (layer, after) in enumerate(zip(qnet.layers, qnet.layers[1:], strict=False))
             if layer.kind == "convolutional" and after.kind in ("maxpool", "upsample")
             and i not in routed}
    return {i for i, layer in enumerate(qnet.layers) if layer.kind != "yolo"} - fused | {-1}


def _assert_live_buffers_disjoint(program):
    """Independent pairwise loop: segments whose live intervals meet never share a byte."""
    for i, a in enumerate(program.segments):
        for b in program.segments[i + 1:]:
            if a.first_layer <= b.last_layer and b.first_layer <= a.last_layer:
                assert not (a.addr < b.end and b.addr < a.end), (a, b)


@pytest.mark.parametrize("reuse", [True, False])
def test_small_yolo_every_layer_bit_exact(small, reuse):
    qnet, _, _, x_q, golden = small
    program = compile_network(qnet, CFG, x_q=x_q, reuse=reuse)
    _, checked = _run_checking_every_layer(program, qnet, x_q, golden)
    assert checked == _in_ddr(qnet)
    _assert_live_buffers_disjoint(program)


def test_route_is_one_allocation(small):
    qnet, _, _, x_q, _ = small
    program = compile_network(qnet, CFG, x_q=x_q)
    names = [s.name for s in program.segments]
    # Layer 4 and the upsampled 13 live in route 15's buffer; route 12 aliases layer 8.
    assert "layer15.out" in names
    assert not {"layer04.out", "layer14.out", "layer12.out"} & set(names)
    by_covers = {layer.covers: (i, layer) for i, layer in enumerate(program.layers)}
    route = program.segment("layer15.out")
    i4, conv4 = by_covers["4"]
    i13, conv13 = by_covers["13+14"]
    i16, conv16 = by_covers["16"]
    for layer in (conv4, conv13):
        assert program.segments[layer.output_segment] is route
    assert program.segments[conv16.input_segment] is route and conv16.input_group == 0
    # Source order: the upsampled 13 (16 channels = 2 groups) first, then layer 4 at group 2.
    assert (conv13.output_group, conv4.output_group) == (0, 2)
    assert conv16.in_shape == (16 + 40, 16, 16)
    assert route.size == 7 * 8 * 16 * 16  # 56 channels in 7 groups of 8, 16x16
    # One allocation, live from its first producer to its last reader (the identity layers
    # reading layer 4 sit between).
    assert (route.first_layer, route.last_layer) == (min(i4, i13), i16)
    (_, conv8), (_, conv13_) = by_covers["8"], by_covers["13+14"]
    assert conv13_.input_segment == conv8.output_segment  # the alias


def test_upsample_write_equals_np_repeat(small):
    qnet, _, _, x_q, golden = small
    program = compile_network(qnet, CFG, x_q=x_q, reuse=False)
    mem, _ = _run_checking_every_layer(program, qnet, x_q, golden)
    index = next(i for i, layer in enumerate(program.layers) if layer.upsample)
    expected = np.repeat(np.repeat(golden[13], 2, axis=1), 2, axis=2)
    _assert_map_equal("upsampled layer 13", expected, program.read_output(mem, index))
    # Only that descriptor sets the field, and it counts the upsampled beats.
    fields = descriptors(program)
    assert [d["upsample"] for d in fields] == [int(i == index) for i in range(len(fields))]
    d = fields[index]
    assert (d["out_height"], d["out_width"]) == (8, 8)
    assert d["out_plane"] == 16 * 16 and d["tile_out_beats"] == d["tile_rows"] * 4 * 8


def test_networks_without_upsample_never_set_it(reference_quantized):
    program = compile_network(reference_quantized[0], CFG)
    assert all(d["upsample"] == 0 for d in descriptors(program))


def test_identity_convolution_is_exact():
    # Worked: (2x + 1) >> 1 == x for every int8 x (m = 2, shift 1, no clamping).
    x = np.arange(-128, 128).reshape(1, 256, 1)
    assert np.array_equal(requantize(x, [2], [2], [1]), x.astype(np.int8))
    assert requantize(np.array([[-128, -1, 0, 127]]), [2], [2], [1]).tolist() == [[-128, -1, 0,
                                                                                    127]]


def test_pool_of_a_routed_map_runs_as_identity_slices(small):
    qnet, _, _, x_q, _ = small
    program = compile_network(qnet, CFG, x_q=x_q)
    ids = [layer for layer in program.layers if layer.conv_index is None]
    # 40 channels: slices of p_oc = 16, 16 and 8, each reading and writing its channel groups.
    assert [(layer.in_shape, layer.out_shape) for layer in ids] == [
        ((16, 16, 16), (16, 8, 8)), ((16, 16, 16), (16, 8, 8)), ((8, 16, 16), (8, 8, 8))]
    assert [layer.output_group for layer in ids] == [0, 2, 4]
    assert [layer.input_group for layer in ids] == [2, 4, 6]  # after the upsampled 13's groups
    assert all(layer.pool == Pool.P2S2 and layer.pool_index == 5 for layer in ids)
    assert {program.segments[layer.weight_segment].name for layer in ids} == {
        "identity16.weights", "identity8.weights"}
    # Identity layers are a copy, not the network's arithmetic: no useful MACs.
    perf = {p.name: p for p in predict_program(program)}
    assert perf["id+5"].macs == 0


def test_refuses_a_route_off_the_channel_group(tmp_path):
    qnet, _, _ = _quantized(tmp_path, up_filters=12)
    with pytest.raises(CompileError, match="layer 15: route source 14 has 12 channels, not a "
                                           "multiple of the 8-channel group"):
        compile_network(qnet, CFG)


def test_real_yolov3_tiny_bit_exact_and_detections(real):
    qnet, x, size, x_q, golden = real
    program = compile_network(qnet, CFG, x_q=x_q)
    mem, checked = _run_checking_every_layer(program, qnet, x_q, golden)
    assert checked == _in_ddr(qnet)
    _assert_live_buffers_disjoint(program)
    outputs = program.read_outputs(mem)
    assert sorted(outputs) == [15, 22]
    for thresh in (0.5, 0.25):
        got = decode_engine_output(qnet, outputs, size, thresh)
        want = infer_int8(qnet, x, size, thresh).detections
        assert len(got) == len(want) and any(np.any(d.probs > 0) for d in got)
        for a, b in zip(got, want, strict=True):
            assert (a.x, a.y, a.w, a.h, a.objectness) == (b.x, b.y, b.w, b.h, b.objectness)
            assert np.array_equal(a.probs, b.probs)


def test_cli_perf_prints_yolov3_tiny_per_layer(capsys):
    from owlet.cli import main

    require_weights()
    assert main(["perf", "--model", "yolov3-tiny"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip()}
    # Every convolution, the upsample fused into 18, the 16 identity slices of pool 9.
    for name in ("0+1", "8", "10+11", "12", "15", "18+19", "21", "22"):
        assert name in rows, name
    assert int(rows["18+19"][5]) == 128 * 26 * 26  # written bytes: the upsampled map
