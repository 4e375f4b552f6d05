"""The compiler: fusion, the DDR memory map, buffer reuse (checked by independent loops)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.compiler import CompileError, allocate, compile_network
from firmware.executor import descriptors
from firmware.program import HOST_BEFORE, SegmentKind
from hdl.descriptor import EngineConfig, Pool
from model.darknet import parse_cfg
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
                c, h, w = layer.in_shape
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
