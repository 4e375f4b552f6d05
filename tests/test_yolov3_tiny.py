"""The published YOLOv3-tiny: cfg coverage ([route], [upsample], [yolo]), the float reference
against the real darknet (tests/data/darknet-yolov3-tiny), loop oracles of the new layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import DATA_DIR

from model.darknet import DarknetFormatError, load_darknet, parse_cfg, write_cfg
from model.float_ref import (
    forward,
    route,
    upsample,
    upsample_naive,
    yolo_forward,
    yolo_forward_naive,
)
from model.golden import conv2d_int, forward_int, quantize_input
from model.image import letterbox, load_image
from model.network import MaxpoolLayer, RouteLayer, UpsampleLayer, YoloLayer
from model.pipeline import detection_agreement, infer_float, infer_int8, prepare_input
from model.quant import (
    QuantizationError,
    QuantizedNetwork,
    QuantRoute,
    quantize_network,
    shared_scale_groups,
)
from model.report import image_variants
from model.zoo import DOG_IMAGE, YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS

REF = DATA_DIR / "darknet-yolov3-tiny"
COCO_DOG, COCO_BICYCLE, COCO_CAR, COCO_TRUCK = 16, 1, 2, 7
# Darknet's dump of the two heads agrees with the float reference to float32 summation order
# (measured: bit for bit with exact=True); this is the tolerance.
HEAD_RTOL = 1e-5


def require_weights():
    missing = [p for p in (YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS) if not p.is_file()]
    if missing:
        pytest.fail(f"{missing[0]} is missing: run `make weights`", pytrace=False)


@pytest.fixture(scope="module")
def yolo_net():
    require_weights()
    return load_darknet(YOLOV3_TINY_CFG, YOLOV3_TINY_WEIGHTS)


@pytest.fixture(scope="module")
def darknet_input(yolo_net):
    return np.fromfile(REF / "input.f32", dtype="<f4").reshape(yolo_net.input_shape)


@pytest.fixture(scope="module")
def float_run(yolo_net, darknet_input):
    return infer_float(yolo_net, darknet_input, (768, 576), thresh=0.25, nms=0.45)


def darknet_boxes():
    """boxes.txt as (N, 4) boxes, (N,) objectness, (N, 80) class probabilities."""
    rows = np.loadtxt(REF / "boxes.txt", dtype=np.float64, comments="#", ndmin=2)
    return rows[:, :4], rows[:, 4], rows[:, 5:]


def max_rel_error(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


# --- cfg ---------------------------------------------------------------------------------------

def test_real_cfg_layers_shapes_and_heads():
    require_weights()
    net = parse_cfg(YOLOV3_TINY_CFG)
    kinds = [layer.kind for layer in net.layers]
    assert len(kinds) == 24
    assert [i for i, k in enumerate(kinds) if k == "yolo"] == [16, 23]
    route17, up19, route20 = net.layers[17], net.layers[19], net.layers[20]
    assert isinstance(route17, RouteLayer) and route17.layers == (13,)  # layers = -4
    assert route17.out_shape == (256, 13, 13)
    assert isinstance(up19, UpsampleLayer) and (up19.stride, up19.out_shape) == (2, (128, 26, 26))
    assert isinstance(route20, RouteLayer) and route20.layers == (19, 8)  # layers = -1, 8
    assert route20.out_shape == (128 + 256, 26, 26)
    pool11 = net.layers[11]
    assert isinstance(pool11, MaxpoolLayer) and (pool11.size, pool11.stride) == (2, 1)
    assert pool11.in_shape == pool11.out_shape == (512, 13, 13)
    head16, head23 = net.layers[16], net.layers[23]
    assert (head16.mask, head23.mask) == ((3, 4, 5), (0, 1, 2))
    assert head16.out_shape == (255, 13, 13) and head23.out_shape == (255, 26, 26)
    assert head16.classes == 80 and head16.num == 6
    np.testing.assert_array_equal(head23.anchors[5], np.float32([344, 319]))
    assert head16.options == {"jitter": ".3", "ignore_thresh": ".7", "truth_thresh": "1",
                              "random": "1"}
    assert [i for i, _ in net.heads] == [16, 23]


BASE = "[net]\nwidth=8\nheight=8\nchannels=3\n"
CONV = "[convolutional]\nfilters={}\nsize=1\nactivation=linear\n"


def test_every_new_key_parses(tmp_path):
    cfg = tmp_path / "small.cfg"
    cfg.write_text(
        BASE + CONV.format(4) + "[maxpool]\nsize=2\nstride=2\n" + "[upsample]\n"  # 0, 1, 2
        + "[route]\nlayers=2, 0\n"  # 3: absolute and positive
        + CONV.format(2 * 7) + "[yolo]\nclasses=2\nnum=2\nanchors=1,2, 3,4\njitter=.2\n"  # 4, 5
        + "[route]\nlayers=-3\n"  # 6: -> 3
        + CONV.format(7) + "[yolo]\nmask=1\nclasses=2\nnum=2\nanchors=1,2,3,4\n"  # 7, 8
        "ignore_thresh=.5\ntruth_thresh=1\nrandom=0\nmax=30\n"
    )
    net = parse_cfg(cfg)
    up, cat, head5, back, head8 = (net.layers[i] for i in (2, 3, 5, 6, 8))
    assert up.stride == 2 and up.out_shape == (4, 8, 8)  # darknet's default stride
    assert cat.layers == (2, 0) and cat.out_shape == (8, 8, 8)
    assert head5.mask == (0, 1) and head5.num == 2  # no mask: every anchor
    assert head5.options == {"jitter": ".2"}
    assert back.layers == (3,) and back.out_shape == (8, 8, 8)
    assert head8.mask == (1,) and head8.out_shape == (7, 8, 8)
    assert head8.options == {"ignore_thresh": ".5", "truth_thresh": "1", "random": "0",
                             "max": "30"}


def assert_same_structure(a, b):
    assert a.input_shape == b.input_shape and a.options == b.options
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert type(la) is type(lb)
        for f in dataclasses.fields(la):
            va, vb = getattr(la, f.name), getattr(lb, f.name)
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), f.name
            else:
                assert va == vb, f.name


def test_write_cfg_round_trips_route_upsample_yolo(tmp_path):
    require_weights()
    net = parse_cfg(YOLOV3_TINY_CFG)
    write_cfg(net, tmp_path / "out.cfg")
    assert_same_structure(net, parse_cfg(tmp_path / "out.cfg"))


@pytest.mark.parametrize(
    ("body", "line", "pattern"),
    [
        (CONV.format(2) + "[route]\nlayers=1\n", 10, r"layers=1 refers to layer 1, but route 1 "
                                                     r"can only use layers 0..0"),
        (CONV.format(2) + "[route]\nlayers=-2\n", 10, r"layers=-2 refers to layer -1"),
        (CONV.format(2) + "[route]\nlayers=0,x\n", 10, r"layers must be comma-separated integers"),
        ("[route]\nlayers=-1\n", 6, r"route 0 can only use layers 0..-1"),
        (CONV.format(2) + "[route]\n", 9, r"missing required key 'layers'"),
        (CONV.format(2) + "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n", 13,
         r"cannot concatenate maps of different sizes: layer 1 2x4x4, layer 0 2x8x8"),
        (CONV.format(2) + "[route]\nlayers=0\ngroups=2\n", 11,
         r"unknown key 'groups' in \[route\]"),
        ("[upsample]\nstride=2\nscale=1\n", 7, r"unknown key 'scale' in \[upsample\]"),
        ("[upsample]\nstride=0\n", 6, r"stride must be a positive integer, got 0"),
        (CONV.format(7) + "[yolo]\nclasses=2\nnum=1\nbeta_nms=.6\n", 12,
         r"unknown key 'beta_nms' in \[yolo\]"),
        (CONV.format(7) + "[yolo]\nmask=0,3\nclasses=2\nnum=3\n", 10,
         r"mask 0,3 selects anchors outside 0..2"),
        (CONV.format(8) + "[yolo]\nclasses=2\nnum=1\n", 9,
         r"input has 8 channels, expected len\(mask\)\*\(4\+1\+classes\) = 7"),
        (CONV.format(7) + "[yolo]\nclasses=2\nnum=2\nmask=0\nanchors=1,2,3\n", 13,
         r"3 anchor values for num=2, expected 4"),
    ],
)
def test_cfg_errors_name_file_and_line(tmp_path, body, line, pattern):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(BASE + body)
    with pytest.raises(DarknetFormatError, match=pattern) as err:
        parse_cfg(cfg)
    assert str(err.value).startswith(f"{cfg}:{line}:"), str(err.value)


# --- float layers against loop oracles and worked answers --------------------------------------

def test_route_concatenates_in_channel_order():
    a = np.arange(2 * 2 * 3).reshape(2, 2, 3)
    b = -np.arange(1 * 2 * 3).reshape(1, 2, 3) - 1
    outputs = [a, None, b]
    got = route(outputs, (2, 0))
    assert got.shape == (3, 2, 3)
    assert got[0].tolist() == [[-1, -2, -3], [-4, -5, -6]]
    assert got[1:].tolist() == a.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.int8])
@pytest.mark.parametrize(("c", "h", "w", "stride"), [(2, 3, 4, 2), (1, 1, 1, 3), (3, 2, 5, 1)])
def test_upsample_matches_darknet_loops(dtype, c, h, w, stride):
    x = np.random.default_rng(c * 7 + stride).integers(-128, 128, (c, h, w)).astype(dtype)
    got = upsample(x, stride)
    assert got.dtype == dtype and np.array_equal(got, upsample_naive(x, stride))


def test_upsample_worked_example():
    assert upsample(np.array([[[1, 2], [3, 4]]]), 2)[0].tolist() == [
        [1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_yolo_forward_matches_loops_and_keeps_w_h_raw():
    layer = YoloLayer((2 * 8, 3, 4), (2 * 8, 3, 4), np.ones((3, 2), np.float32), (0, 2), 3)
    x = np.random.default_rng(0).normal(0, 4, layer.in_shape).astype(np.float32)
    got = yolo_forward(x, layer)
    np.testing.assert_array_max_ulp(got, yolo_forward_naive(x, layer), maxulp=1)
    boxes = got.reshape(2, 8, 3, 4)
    np.testing.assert_array_equal(boxes[:, 2:4], x.reshape(2, 8, 3, 4)[:, 2:4])
    np.testing.assert_allclose(boxes[:, 4], 1 / (1 + np.exp(-x.reshape(2, 8, 3, 4)[:, 4])),
                               rtol=1e-6)


# --- the real network against darknet ---------------------------------------------------------

def test_letterbox_equals_darknet_input(yolo_net, darknet_input):
    x, size = prepare_input(DOG_IMAGE, yolo_net.input_shape)
    assert size == (768, 576)
    assert np.array_equal(x, darknet_input)


@pytest.mark.parametrize("index", [16, 23])
def test_yolo_heads_agree_with_darknet(yolo_net, float_run, index):
    want = np.fromfile(REF / f"layer{index:02d}.f32", dtype="<f4")
    want = want.reshape(yolo_net.layers[index].out_shape)
    got = float_run.outputs[index]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert max_rel_error(got, want) <= HEAD_RTOL


def test_blas_path_heads_agree_with_darknet(yolo_net, darknet_input):
    outputs = forward(yolo_net, darknet_input, exact=False)
    for index in (16, 23):
        want = np.fromfile(REF / f"layer{index:02d}.f32", dtype="<f4")
        assert max_rel_error(outputs[index], want.reshape(outputs[index].shape)) <= HEAD_RTOL


def test_detections_equal_darknets(float_run):
    boxes, objectness, probs = darknet_boxes()
    kept = [d for d in float_run.detections if np.any(d.probs > 0)]
    assert len(kept) == len(boxes) == 4
    best = [int(np.argmax(d.probs)) for d in kept]
    assert best == [int(np.argmax(p)) for p in probs]
    assert {COCO_DOG, COCO_BICYCLE, COCO_CAR, COCO_TRUCK} == {
        int(c) for d in kept for c in np.flatnonzero(d.probs)}
    for det, box, obj, prob in zip(kept, boxes, objectness, probs, strict=True):
        # boxes.txt prints 7 significant digits
        np.testing.assert_allclose([det.x, det.y, det.w, det.h], box, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(det.objectness, obj, rtol=1e-6)
        assert np.array_equal(det.probs > 0, prob > 0)
        np.testing.assert_allclose(det.probs, prob, rtol=1e-6, atol=1e-7)


# --- int8: quantizer and golden model ----------------------------------------------------------

@pytest.fixture(scope="module")
def quantized(yolo_net):
    """YOLOv3-tiny calibrated (max) on dog.png and three variants of it, and its int8 run."""
    x, size = prepare_input(DOG_IMAGE, yolo_net.input_shape)
    variants = image_variants(load_image(DOG_IMAGE), 3, seed=1)
    qnet = quantize_network(yolo_net, [x] + [letterbox(v, 416, 416) for v in variants])
    return qnet, x, size, infer_int8(qnet, x, size, thresh=0.25)


def test_route_producers_share_one_scale(yolo_net):
    # Route 20 reads upsample 19 (<- conv 18) and conv 8: one group; route 17 has one source.
    assert shared_scale_groups(yolo_net) == [{8, 18}]
    thresholds = {i: 1.0 + i for i, layer in enumerate(yolo_net.layers)
                  if layer.kind == "convolutional" and i not in (15, 22)}
    qnet = quantize_network(yolo_net, thresholds=thresholds)
    shared = max(thresholds[8], thresholds[18]) / 127.0  # 19/127
    assert qnet.layers[8].out_scale == qnet.layers[18].out_scale == shared
    assert qnet.layers[9].scale == qnet.layers[19].scale == qnet.layers[20].scale == shared
    assert qnet.layers[10].in_scale == qnet.layers[21].in_scale == shared
    assert qnet.layers[13].out_scale == thresholds[13] / 127.0  # not in a group
    assert qnet.layers[17].scale == qnet.layers[18].in_scale == thresholds[13] / 127.0


def test_route_of_the_network_input_is_refused(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(BASE + CONV.format(3) + "[route]\nlayers=0\n" + "[maxpool]\nsize=1\n"
                   "[route]\nlayers=-1,0\n" + CONV.format(2))
    net = parse_cfg(cfg)
    assert shared_scale_groups(net) == []  # one producer each
    cfg.write_text(BASE + "[maxpool]\nsize=1\n" + CONV.format(3) + "[route]\nlayers=0,1\n"
                   + CONV.format(2))
    with pytest.raises(QuantizationError, match="layer 2: route of layers \\[0, 1\\] reaches "
                                                "the network input"):
        shared_scale_groups(parse_cfg(cfg))


def test_route_is_memory_layout(quantized):
    qnet, _, _, int_run = quantized
    out = int_run.outputs
    assert isinstance(qnet.layers[20], QuantRoute) and qnet.layers[20].layers == (19, 8)
    assert out[20].dtype == np.int8
    assert np.array_equal(out[20][:128], out[19]) and np.array_equal(out[20][128:], out[8])
    assert np.array_equal(out[17], out[13])
    # upsample: every int8 value of layer 18 fills a 2x2 block, by hand
    for dy in (0, 1):
        for dx in (0, 1):
            assert np.array_equal(out[19][:, dy::2, dx::2], out[18])


def test_yolo_heads_leave_as_int32(quantized):
    qnet, x, _, int_run = quantized
    for producer, head in ((15, 16), (22, 23)):
        conv = qnet.layers[producer]
        assert conv.output_int32 and int_run.outputs[producer].dtype == np.int32
        # the accumulators themselves: the golden conv of its own int8 input, unrequantized
        acc = conv2d_int(int_run.outputs[producer - 1], conv.weight, conv.bias, 1, conv.padding)
        assert np.array_equal(acc, int_run.outputs[producer])
        # the host: dequantize in float64, then darknet's yolo activation (an independent
        # logistic in float64 here)
        real = acc * (conv.w_scale * conv.in_scale)[:, None, None]
        boxes = real.reshape(3, 85, *real.shape[1:])
        want = boxes.copy()
        want[:, [0, 1, *range(4, 85)]] = 1 / (1 + np.exp(-boxes[:, [0, 1, *range(4, 85)]]))
        got = int_run.outputs[head].reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_quantized_yolov3_tiny_file_round_trip(quantized, tmp_path):
    qnet, x, _, int_run = quantized
    qnet.save(tmp_path / "y.npz")
    back = QuantizedNetwork.load(tmp_path / "y.npz")
    assert [layer.kind for layer in back.layers] == [layer.kind for layer in qnet.layers]
    for a, b in zip(qnet.layers, back.layers, strict=True):
        for name, value in vars(getattr(a, "layer", a)).items():
            other = vars(getattr(b, "layer", b))[name]
            if isinstance(value, np.ndarray):
                assert value.dtype == other.dtype and np.array_equal(value, other), name
            else:
                assert value == other, name
    outputs = forward_int(back, quantize_input(x))
    for i in (8, 15, 20, 22):
        assert np.array_equal(outputs[i], int_run.outputs[i]), i


def test_int8_finds_every_float_object_on_dog_and_no_other(float_run, quantized):
    _, _, _, int_run = quantized
    # float_run decodes darknet's input, identical to prepare_input's (tested above). Every
    # labelled (box, class) of darknet's: dog, bicycle, and car + truck on each of two boxes.
    found = detection_agreement(float_run.detections, int_run.detections, per_class=True)
    assert found == (6, 6)
    extra = detection_agreement(int_run.detections, float_run.detections, per_class=True)
    assert extra == (6, 6)


def test_detection_agreement_per_class_worked_example():
    from model.detect import Detection

    def det(x, probs):
        return Detection(x, 0.5, 0.2, 0.2, 0.9, np.float32(probs))

    reference = [det(0.3, [0.6, 0.5, 0]), det(0.7, [0, 0, 0.4])]
    # class 0 and 1 swap ranks on the first box; the second box moved too far (IoU 0)
    test = [det(0.3, [0.5, 0.6, 0]), det(0.9, [0, 0, 0.4])]
    assert detection_agreement(reference, test) == (0, 2)
    assert detection_agreement(reference, test, per_class=True) == (2, 3)


def test_cli_model_selects_yolov3_tiny_and_its_names(capsys):
    require_weights()
    from owlet.cli import main

    assert main(["infer", "--model", "yolov3-tiny", str(DOG_IMAGE), "--thresh", "0.25"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == [
        "bicycle", "car", "car", "dog", "truck", "truck"]
