"""The quantized pipeline end to end on the reference network, and the owlet CLI."""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from model.darknet import load_darknet
from model.float_ref import conv2d, fold_batchnorm, forward, leaky
from model.golden import conv2d_int, dequantize_output
from model.pipeline import (
    class_names,
    detection_agreement,
    infer_float,
    infer_int8,
    prepare_input,
    quantization_quality,
    sqnr_db,
)
from model.quant import QuantizationError, QuantizedNetwork, quantize_network
from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS
from owlet.cli import main


@pytest.fixture(scope="module")
def ref(darknet_tiny96):
    return darknet_tiny96


@pytest.fixture(scope="module")
def network(ref):
    return load_darknet(REFERENCE_CFG, REFERENCE_WEIGHTS)


@pytest.fixture(scope="module")
def letterboxed(ref, network):
    return prepare_input(DOG_IMAGE, network.input_shape)


@pytest.fixture(scope="module")
def quantized(network, letterboxed):
    return quantize_network(network, [letterboxed[0]])


def test_bn_folding_matches_float(network, letterboxed):
    # One conv with folded weights and bias reproduces darknet's conv + batch norm + leaky.
    x = letterboxed[0]
    layer = network.layers[0]
    w, b = fold_batchnorm(layer)
    folded = leaky(conv2d(x.astype(np.float64), w, layer.stride, layer.padding) + b[:, None, None])
    expected = forward(network, x)[0]
    assert np.max(np.abs(folded - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_dequantize_output_worked_example():
    # s_x = 1/127, s_w = (0.5, 0.001); real value = acc · s_w[o] · s_x, worked by hand:
    #   channel 0:     254 · 0.5 / 127 = 1.0,       -127 · 0.5 / 127 = -0.5
    #   channel 1:  127000 · 0.001 / 127 = 1.0, -254000 · 0.001 / 127 = -2.0
    # Two channels along W as well as O: a scale broadcast along the wrong axis gives other
    # numbers, not an error.
    layer = SimpleNamespace(w_scale=np.array([0.5, 0.001]), in_scale=1 / 127)
    acc = np.array([[[254, -127]], [[127000, -254000]]], np.int32)
    got = dequantize_output(layer, acc)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.float32([[[1.0, -0.5]], [[1.0, -2.0]]]))


def test_last_layer_dequantized_against_float_reference(network, quantized, letterboxed):
    """Layer 13 (1x1, linear, int32 output) on the float reference's own input to it, quantized
    with the layer's input scale: the integer convolution, dequantized, must equal the float
    convolution up to the rounding of x, w and b alone. With x = s_x·x_q + dx, w = s_w·w_q + dw,
    b = s_w·s_x·b_q + db and |dx| <= s_x/2, |dw| <= s_w/2, |db| <= s_w·s_x/2 (round to nearest,
    no clipping):
        |y - s_w·s_x·(Σ w_q·x_q + b_q)| <= Σ_c (|w|·s_x/2 + s_w·|x|/2 + s_w·s_x/4) + s_w·s_x/2,
    plus float32 rounding: 2e-5 of Σ|w·x| + |b| for darknet's sum of 128 products and the
    float32 result. Forgetting s_x or taking another channel's s_w breaks the bound 5x to 700x.
    """
    last = quantized.layers[13]
    assert last.output_int32 and last.size == 1
    outputs = forward(network, letterboxed[0])
    x = outputs[12].astype(np.float64)
    s_x, s_w = last.in_scale, last.w_scale
    assert np.abs(x).max() <= 127.5 * s_x  # max calibration on this image: nothing clips
    x_q = np.floor(x / s_x + 0.5).astype(np.int8)
    got = dequantize_output(last, conv2d_int(x_q, last.weight, last.bias, 1, 0))

    w, b = fold_batchnorm(network.layers[13])
    w, b = w[:, :, 0, 0].astype(np.float64), b.astype(np.float64)[:, None]
    abs_x = np.abs(x).reshape(x.shape[0], -1)
    rounding = (np.abs(w).sum(axis=1)[:, None] * s_x / 2 + s_w[:, None] * abs_x.sum(axis=0) / 2
                + (x.shape[0] / 4 + 1 / 2) * s_w[:, None] * s_x)
    bound = rounding + 2e-5 * (np.abs(w) @ abs_x + np.abs(b))
    error = np.abs(got.reshape(len(w), -1) - outputs[13].reshape(len(w), -1))
    assert np.all(error <= bound), np.max(error / bound)


def test_golden_outputs_close_to_float(network, quantized, letterboxed):
    x, size = letterboxed
    float_run = infer_float(network, x, size, thresh=0.2)
    int_run = infer_int8(quantized, x, size, thresh=0.2)
    rows = quantization_quality(quantized, float_run, int_run)
    # int8 with max calibration keeps every layer above 20 dB on its calibration image, and the
    # detections survive: most float detections are found again by the integer model.
    assert min(r.sqnr_db for r in rows) > 20, [(r.index, round(r.sqnr_db, 1)) for r in rows]
    matched, total = detection_agreement(float_run.detections, int_run.detections)
    assert total > 0 and matched >= 0.8 * total, (matched, total)


def test_quantized_model_file_round_trip(quantized, tmp_path):
    path = tmp_path / "model.npz"
    quantized.save(path)
    loaded = QuantizedNetwork.load(path)
    assert loaded.input_shape == quantized.input_shape
    for a, b in zip(quantized.layers, loaded.layers, strict=True):
        assert a.kind == b.kind and a.in_shape == b.in_shape and a.out_shape == b.out_shape
        if a.kind == "convolutional":
            for name in ("weight", "bias", "m_pos", "m_neg", "shift", "w_scale"):
                va, vb = getattr(a, name), getattr(b, name)
                assert va.dtype == vb.dtype and np.array_equal(va, vb), name
            assert (a.in_scale, a.out_scale, a.output_int32) == (b.in_scale, b.out_scale,
                                                                 b.output_int32)


def test_quantized_model_file_errors(tmp_path, quantized):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(QuantizationError, match="bad.npz"):
        QuantizedNetwork.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(QuantizationError, match="not an Owlet"):
        QuantizedNetwork.load(other)


def test_cli_infer_float_dump_and_json_match_darknet(ref, tmp_path):
    dump, out_json, png = tmp_path / "dump", tmp_path / "dets.json", tmp_path / "dets.png"
    status = main(["infer", "--cfg", str(REFERENCE_CFG), "--weights",
                   str(REFERENCE_WEIGHTS), str(DOG_IMAGE), "--thresh", "0.2",
                   "--dump", str(dump), "--json", str(out_json), "--out", str(png)])
    assert status == 0
    expected_input = np.fromfile(ref / "input.f32", np.float32).reshape(3, 96, 96)
    # The float reference reproduces darknet's summation order: the dumps equal it bit for bit.
    assert np.array_equal(np.load(dump / "input.npy"), expected_input)
    for i in range(15):
        darknet = np.fromfile(ref / f"layer{i:02d}.f32", np.float32)
        ours = np.load(dump / f"layer{i:02d}.npy")
        assert ours.dtype == np.float32 and np.array_equal(ours.ravel(), darknet), i
    doc = json.loads(out_json.read_text())
    assert doc["image"] == [768, 576]
    rows = [list(map(float, line.split())) for line in (ref / "boxes.txt").read_text().splitlines()
            if not line.startswith("#")]
    darknet_kept = [r for r in rows if any(p > 0 for p in r[5:])]
    assert len(doc["detections"]) == len(darknet_kept)
    for det, row in zip(doc["detections"], darknet_kept, strict=True):
        assert np.allclose(det["box"] + [det["objectness"]] + det["probs"], row, atol=1e-4)
    assert png.stat().st_size > 0


def test_cli_infer_int8_dump_is_integer(ref, tmp_path, capsys):
    dump = tmp_path / "dump"
    status = main(["infer", "--cfg", str(REFERENCE_CFG), "--weights",
                   str(REFERENCE_WEIGHTS), str(DOG_IMAGE), "--mode", "int8",
                   "--dump", str(dump), "--repeat", "2"])
    assert status == 0
    out = capsys.readouterr().out
    assert "calibrating activation scales on" in out and "ms/frame:" in out
    dtypes = [np.load(dump / f"layer{i:02d}.npy").dtype for i in range(15)]
    assert dtypes == [np.int8] * 13 + [np.int32, np.float32]


def test_cli_errors_are_one_line(tmp_path, capsys, quantized):
    """Each class of bad input to ``owlet infer`` ends in exit code 2 and one line on stderr that
    names the file and what is wrong with it."""
    base = ["infer", "--cfg", str(REFERENCE_CFG), "--weights", str(REFERENCE_WEIGHTS)]
    truncated = tmp_path / "short.weights"
    truncated.write_bytes(REFERENCE_WEIGHTS.read_bytes()[:5000])
    cut = tmp_path / "cut.png"
    cut.write_bytes(DOG_IMAGE.read_bytes()[:5000])
    names = tmp_path / "two.names"
    names.write_text("dog\ncat\n")
    qmodel = tmp_path / "model.npz"
    quantized.save(qmodel)
    # The same weights fit a cfg whose first layer is linear: only --qmodel can tell.
    linear = tmp_path / "linear.cfg"
    linear.write_text(REFERENCE_CFG.read_text().replace("activation=leaky", "activation=linear",
                                                        1))
    cases = [
        (base + [str(tmp_path / "missing.png")], r"missing\.png"),
        (["infer", "--cfg", str(REFERENCE_CFG), "--weights", str(truncated)],
         r"short\.weights: truncated at layer \d+"),
        (base + [str(cut)], r"cut\.png: 768x576 PNG image, mode 'RGB': corrupt or truncated"),
        (base + ["--names", str(names)], r"two\.names: 2 class names, the network has 3 classes"),
        (["infer", "--cfg", str(linear), "--weights", str(REFERENCE_WEIGHTS), "--mode", "int8",
          "--qmodel", str(qmodel)],
         r"model\.npz does not match .*linear\.cfg: layer 0 is convolutional 3x96x96 -> 8x96x96 "
         r"size=3 stride=1 padding=1 activation=leaky in the quantized model, convolutional "
         r"3x96x96 -> 8x96x96 size=3 stride=1 padding=1 activation=linear in the cfg"),
    ]
    for argv, pattern in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.fullmatch(f"owlet: error: .*{pattern}.*\n", err), err


@pytest.mark.parametrize("count", [2, 4])
def test_names_file_must_name_every_class(tmp_path, count):
    # Fewer names would crash darknet; more are most likely another dataset's, and would label
    # every detection wrong without a word.
    names = tmp_path / "three.names"
    names.write_text("".join(f"c{i}\n" for i in range(count)))
    with pytest.raises(ValueError, match=rf"three\.names: {count} class names, the network has 3 "
                                         "classes"):
        class_names(3, REFERENCE_CFG, names)
    names.write_text("cat\n\ndog\nbird\n\n")  # blank lines do not count
    assert class_names(3, REFERENCE_CFG, names) == ["cat", "dog", "bird"]
    # Without a names file beside the cfg, the classes are numbered.
    assert class_names(2, tmp_path / "other.cfg") == ["class0", "class1"]


def test_quantized_model_for_another_network_is_refused(quantized, tmp_path):
    """Layer count and region parameters: the differences a shape check alone would miss."""
    from model.darknet import parse_cfg

    net = parse_cfg(REFERENCE_CFG)
    quantized.check_matches(net, "model.npz", "ref.cfg")  # the network it was made from
    fewer = dataclasses.replace(quantized, layers=quantized.layers[:-1])
    with pytest.raises(QuantizationError, match=r"model\.npz does not match ref\.cfg: the "
                                                r"quantized model has 14 layers, the cfg 15"):
        fewer.check_matches(net, "model.npz", "ref.cfg")
    other = tmp_path / "anchors.cfg"
    text = REFERENCE_CFG.read_text()
    anchors = next(line for line in text.splitlines() if line.replace(" ", "").startswith(
        "anchors="))
    other.write_text(text.replace(anchors, "anchors=1,1,2,2,3,3,4,4,5,5"))
    with pytest.raises(QuantizationError, match=r"layer 14 is region .* anchors=\[.*\] in the "
                                                r"quantized model, region .* anchors=\[1\.0, "
                                                r"1\.0, 2\.0"):
        quantized.check_matches(parse_cfg(other), "model.npz", other)
    small = tmp_path / "small.cfg"
    small.write_text(text.replace("width=96", "width=64"))
    with pytest.raises(QuantizationError, match=r"the input is 3x96x96 in the quantized model, "
                                                r"3x96x64 in the cfg"):
        quantized.check_matches(parse_cfg(small), "model.npz", small)


def test_quantizer_refuses_an_empty_calibration_set(network):
    with pytest.raises(QuantizationError, match="at least one image"):
        quantize_network(network, [])


def test_sqnr_db_by_hand():
    # signal 1 + 1 = 2, noise 0 + 1 = 1: 10 log10(2) dB.
    assert sqnr_db(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(3.0103, abs=1e-4)
    assert sqnr_db(np.array([2.0]), np.array([2.0])) == float("inf")


def test_calibration_comparison_covers_every_method(network, ref):
    from model.image import load_image
    from model.quant import CALIBRATION_METHODS
    from model.report import compare_calibration, image_variants

    image = load_image(DOG_IMAGE)
    variants = image_variants(image, 2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(variants, image_variants(image, 2, seed=3),
                                                      strict=True))
    results = compare_calibration(network, [image], variants)
    assert [r.method for r in results] == list(CALIBRATION_METHODS)
    for r in results:
        assert len(r.layer_sqnr_db) == len(network.layers) and 0 <= r.matched <= r.total
