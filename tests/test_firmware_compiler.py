"""The compiler: fusion, the DDR memory map, buffer reuse (checked by independent loops)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.compiler import CompileError, allocate, compile_network
from firmware.executor import descriptors
from firmware.layout import fm_to_ddr, pack_tap_weights, pack_taps
from firmware.program import HOST_BEFORE, SegmentKind
from hdl.descriptor import EngineConfig, Pool
from model.darknet import parse_cfg
from model.golden import conv2d_int_naive
from model.quant import QuantConv, QuantizedNetwork, QuantMaxpool
from model.zoo import TINY_YOLO_VOC_CFG

CFG = EngineConfig()


@pytest.fixture(scope="module")
def voc_geometry():
    """tiny-YOLOv2-VOC 416x416 with arbitrary integers: the compiler only needs the geometry.

    (Calibrating real scales takes seconds; the memory map does not depend on them.)
    """
    rng = np.random.default_rng(1)
    net = parse_cfg(TINY_YOLO_VOC_CFG)
    last = max(i for i, layer in enumerate(net.layers) if layer.kind == "convolutional")
    layers = []
    for index, layer in enumerate(net.layers):
        if layer.kind == "convolutional":
            o, c, k = layer.filters, layer.in_shape[0], layer.size
            ones = np.ones(o, np.int64)
            layers.append(QuantConv(
                layer.in_shape, layer.out_shape, k, layer.stride, layer.padding,
                layer.activation, rng.integers(-127, 128, (o, c, k, k), dtype=np.int8),
                np.zeros(o, np.int32), ones, ones, ones * 20, 1 / 127, ones / 127.0,
                None if index == last else 1.0, index == last))
        elif layer.kind == "maxpool":
            layers.append(QuantMaxpool(layer.in_shape, layer.out_shape, layer.size,
                                       layer.stride, layer.padding, 1.0))
    return QuantizedNetwork(net.input_shape, 1 / 127, layers)


def _overlap(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def _assert_live_buffers_disjoint(program):
    """Independent pairwise loop: segments whose live intervals meet never share a byte."""
    segs = program.segments
    for i, a in enumerate(segs):
        for b in segs[i + 1:]:
            live_together = a.first_layer <= b.last_layer and b.first_layer <= a.last_layer
            if live_together:
                assert not _overlap(a.addr, a.end, b.addr, b.end), (a.name, b.name)


def _peak_live_bytes(program):
    """Largest sum of aligned run-time buffer sizes live at one moment: a lower bound on the
    arena of any allocator."""
    runtime = [s for s in program.segments
               if s.kind in (SegmentKind.INPUT, SegmentKind.FEATURE_MAP, SegmentKind.OUTPUT)]
    align = program.alignment
    return max(sum(-(-s.size // align) * align for s in runtime
                   if s.first_layer <= t <= s.last_layer)
               for t in range(HOST_BEFORE, len(program.layers) + 1))


def test_allocator_random_lifetimes_never_overlap():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        buffers = []
        for _ in range(n):
            first = int(rng.integers(-1, 10))
            buffers.append((int(rng.integers(1, 5000)), first, first + int(rng.integers(0, 4))))
        for reuse in (True, False):
            offsets = allocate(buffers, 64, reuse)
            assert all(o % 64 == 0 for o in offsets)
            for i, (si, fi, li) in enumerate(buffers):
                for j, (sj, fj, lj) in enumerate(buffers[:i]):
                    if not reuse or (fi <= lj and fj <= li):
                        assert not _overlap(offsets[i], offsets[i] + si,
                                            offsets[j], offsets[j] + sj), (buffers, offsets)


@pytest.mark.parametrize("reuse", [True, False])
def test_memory_map_never_overlaps_live_buffers(reference_quantized, voc_geometry, reuse):
    for qnet in (reference_quantized[0], voc_geometry):
        program = compile_network(qnet, CFG, reuse=reuse)
        _assert_live_buffers_disjoint(program)
        assert all(s.addr % program.alignment == 0 for s in program.segments)


def test_reuse_reaches_the_peak_of_live_buffers(reference_quantized, voc_geometry):
    for qnet in (reference_quantized[0], voc_geometry):
        shared = compile_network(qnet, CFG)
        separate = compile_network(qnet, CFG, reuse=False)
        assert separate.footprint == shared.footprint_without_reuse
        arena = min(s.addr for s in shared.segments if s.kind == SegmentKind.INPUT)
        # A chain of layers: greedy first fit reaches the lower bound (the topmost buffer's
        # end is not rounded up).
        align = shared.alignment
        assert -(-(shared.footprint - arena) // align) * align == _peak_live_bytes(shared)
        assert shared.footprint < separate.footprint
        # Nothing but the run-time buffers shares addresses.
        constants = [s for s in shared.segments if s.first_layer == HOST_BEFORE
                     and s.last_layer == len(shared.layers)]
        assert all(s.end <= arena for s in constants)


def test_fusion_covers_every_darknet_layer(reference_quantized):
    qnet = reference_quantized[0]
    program = compile_network(qnet, CFG)
    covered = []
    for layer in program.layers:
        assert qnet.layers[layer.conv_index].kind == "convolutional"
        covered.append(layer.conv_index)
        if layer.pool_index is not None:
            pool = qnet.layers[layer.pool_index]
            assert pool.kind == "maxpool" and layer.pool_index == layer.conv_index + 1
            assert layer.pool == {2: Pool.P2S2, 1: Pool.P2S1}[pool.stride]
            covered.append(layer.pool_index)
        else:
            assert layer.pool == Pool.NONE
        assert layer.out_shape == qnet.layers[layer.output_index].out_shape
    engine_kinds = [i for i, layer in enumerate(qnet.layers) if layer.kind != "region"]
    assert covered == engine_kinds
    assert [layer.out_int32 for layer in program.layers] == \
        [False] * (len(program.layers) - 1) + [True]
    # The cfg: six conv+pool pairs (the sixth pool stride 1), then two convolutions.
    assert [layer.pool for layer in program.layers] == \
        [Pool.P2S2] * 5 + [Pool.P2S1, Pool.NONE, Pool.NONE]


def test_descriptor_extents_are_the_segments(reference_quantized, voc_geometry):
    """Bytes the engine reads and writes per descriptor (from its fields) are exactly the
    segments the layer table names, and chained: each layer reads its predecessor's output."""
    for cfg in (CFG, EngineConfig(p_oc=32)):
        for qnet in (reference_quantized[0], voc_geometry):
            program = compile_network(qnet, cfg)
            segs = program.segments
            for i, (layer, d) in enumerate(zip(program.layers, descriptors(program),
                                               strict=True)):
                beat = cfg.data_width // 8
                k2 = 9 if d["kernel3"] else 1
                extents = {
                    layer.input_segment: (d["in_addr"], d["in_groups"] * d["in_plane"] * beat),
                    layer.output_segment: (d["out_addr"],
                                           d["out_groups"] * d["out_plane"] * beat),
                    layer.weight_segment: (d["w_addr"],
                                           d["og_passes"] * d["og_weight_beats"] * beat),
                    layer.param_segment: (d["param_addr"], d["og_passes"] * cfg.p_oc * 16),
                }
                for index, (addr, size) in extents.items():
                    assert (segs[index].addr, segs[index].size) == (addr, size)
                c, h, w = layer.engine_in_shape  # the descriptor's: tap-packed or not
                o = layer.out_shape[0]
                assert segs[layer.weight_segment].size == \
                    -(-o // cfg.p_oc) * cfg.p_oc * -(-c // cfg.p_ic) * cfg.p_ic * k2
                if i:
                    assert layer.input_segment == program.layers[i - 1].output_segment


def test_refuses_what_the_engine_cannot_run(reference_quantized):
    qnet = reference_quantized[0]

    def with_layer(index, **changes):
        layers = list(qnet.layers)
        layers[index] = type(layers[index])(**{**vars(layers[index]), **changes})
        return QuantizedNetwork(qnet.input_shape, qnet.input_scale, layers)

    with pytest.raises(CompileError, match="layer 2: the engine runs 1x1 and 3x3 stride-1"):
        compile_network(with_layer(2, stride=2), CFG)
    with pytest.raises(CompileError, match="layer 3: the engine pools size 2"):
        compile_network(with_layer(3, size=3, padding=2), CFG)
    with pytest.raises(CompileError, match="layer 0: a maxpool must follow a convolution"):
        compile_network(QuantizedNetwork(qnet.input_shape, qnet.input_scale,
                                         qnet.layers[1:]), CFG)
    with pytest.raises(CompileError, match="only the last convolution may write int32"):
        compile_network(with_layer(12, output_int32=True), CFG)
    pooled_int32 = QuantMaxpool(qnet.layers[13].out_shape, qnet.layers[13].out_shape, 2, 1, 1,
                                1.0)
    with pytest.raises(CompileError, match="layer 14: cannot pool the int32 output of layer 13"):
        compile_network(QuantizedNetwork(qnet.input_shape, qnet.input_scale,
                                         qnet.layers[:14] + [pooled_int32]), CFG)
    with pytest.raises(CompileError, match="layer 0: layer .* too wide for acc_depth=64"):
        compile_network(qnet, EngineConfig(acc_depth=64))
    with pytest.raises(CompileError, match="alignment 100 is not a multiple of the 8-byte beat"):
        compile_network(qnet, CFG, alignment=100)
    with pytest.raises(CompileError, match=r"input shape \(3, 96, 95\), the network expects"):
        compile_network(qnet, CFG, x_q=reference_quantized[1][:, :, :95])
    footprint = compile_network(qnet, CFG).footprint
    with pytest.raises(CompileError, match=f"needs {footprint} bytes of DDR, the memory has "
                                           f"{footprint - 1}"):
        compile_network(qnet, CFG, memory_size=footprint - 1)
    assert compile_network(qnet, CFG, memory_size=footprint).footprint == footprint


def test_pack_taps_is_each_pixels_neighbourhood():
    """Naive loops: channel (c·3 + ky)·3 + kx of pixel (y, x) is x[c, y + ky - 1, x + kx - 1],
    0 outside the map."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (3, 4, 5), dtype=np.int8)
    packed = pack_taps(x, 3)
    assert packed.shape == (27, 4, 5) and packed.dtype == np.int8
    for c in range(3):
        for ky in range(3):
            for kx in range(3):
                for y in range(4):
                    for xx in range(5):
                        yy, xs = y + ky - 1, xx + kx - 1
                        inside = 0 <= yy < 4 and 0 <= xs < 5
                        assert packed[(c * 3 + ky) * 3 + kx, y, xx] == (
                            x[c, yy, xs] if inside else 0), (c, ky, kx, y, xx)


def test_a_1x1_convolution_of_packed_taps_is_the_3x3_convolution():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (3, 6, 7), dtype=np.int8)
    w = rng.integers(-127, 128, (5, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-1000, 1000, 5, dtype=np.int32)
    np.testing.assert_array_equal(
        conv2d_int_naive(pack_taps(x, 3), pack_tap_weights(w), bias, 1, 0),
        conv2d_int_naive(x, w, bias, 1, 1))


def test_the_first_3_channel_layer_runs_tap_packed(reference_quantized):
    qnet, x_q = reference_quantized
    packed = compile_network(qnet, CFG, x_q=x_q)
    plain = compile_network(qnet, CFG, x_q=x_q, pack_taps=False)
    assert [layer.taps_packed for layer in packed.layers] == \
        [True] + [False] * (len(packed.layers) - 1)
    assert not any(layer.taps_packed for layer in plain.layers)
    first = packed.layers[0]
    assert (first.in_shape, first.kernel, first.engine_in_shape) == \
        ((3, 96, 96), 3, (27, 96, 96))
    # The engine runs 1x1 over 4 channel groups (27 channels) instead of 3x3 over one.
    d, d_plain = descriptors(packed)[0], descriptors(plain)[0]
    assert (d["kernel3"], d["in_groups"]) == (0, 4)
    assert (d_plain["kernel3"], d_plain["in_groups"]) == (1, 1)
    # The input segment holds the packed map; its centre tap reads back as the input.
    seg = packed.segments[first.input_segment]
    assert seg.data == fm_to_ddr(pack_taps(x_q, 3)) and seg.size == 4 * 96 * 96 * 8
    mem = packed.ddr_image()
    np.testing.assert_array_equal(packed.read_input(mem, 0), x_q)
    mem[seg.addr:seg.end] = bytes(seg.size)
    packed.write_input(mem, x_q)
    assert bytes(mem[seg.addr:seg.end]) == seg.data
    # Weights: the 1x1 form, 27 input channels padded to 32.
    w_seg = packed.segments[first.weight_segment]
    assert w_seg.size == 16 * 32 * 1
    assert plain.segments[plain.layers[0].input_segment].size == 96 * 96 * 8


def test_layers_that_packing_would_not_shorten_stay_plain(reference_quantized):
    """8 channels fill a group: 9 passes packed or not; a 1x1 first layer has one tap."""
    qnet = reference_quantized[0]
    first = qnet.layers[0]
    for in_channels, size in ((8, 3), (3, 1)):
        o = first.out_shape[0]
        conv = type(first)(**{**vars(first), "in_shape": (in_channels, 96, 96), "size": size,
                              "padding": size // 2,
                              "weight": np.ones((o, in_channels, size, size), np.int8)})
        net = QuantizedNetwork((in_channels, 96, 96), qnet.input_scale, [conv, *qnet.layers[1:]])
        assert not compile_network(net, CFG).layers[0].taps_packed, (in_channels, size)
