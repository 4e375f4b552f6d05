"""The shipped default detector: consistent files, the accuracy it claims, and how ``make train``
reproduces it on any machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from model.darknet import load_darknet
from model.quant import QuantizedNetwork, quantize_network
from model.train.trainer import evaluate
from model.zoo import DEFAULT_CFG, DEFAULT_QMODEL, DEFAULT_WEIGHTS

ARRAYS = ("weight", "bias", "m_pos", "m_neg", "shift", "w_scale")


def assert_integers_are_the_quantized_float_weights(weights, qmodel):
    """QAT exports the quantizer's integers for its learned scales: re-quantizing the darknet
    weights with the model file's scales must give the model file's integers exactly."""
    net = load_darknet(DEFAULT_CFG, weights)
    exported = QuantizedNetwork.load(qmodel)
    thresholds = {i: layer.out_scale * 127.0 for i, layer in enumerate(exported.layers)
                  if layer.kind == "convolutional" and not layer.output_int32}
    again = quantize_network(net, thresholds=thresholds)
    assert exported.calibration["method"] == "qat"
    for index, (a, b) in enumerate(zip(exported.layers, again.layers, strict=True)):
        assert a.kind == b.kind, index
        if a.kind == "convolutional":
            for name in ARRAYS:
                assert np.array_equal(getattr(a, name), getattr(b, name)), (index, name)


def test_shipped_int8_model_is_the_quantized_float_weights():
    assert_integers_are_the_quantized_float_weights(DEFAULT_WEIGHTS, DEFAULT_QMODEL)


def test_shipped_detector_accuracy_float_and_int8():
    # 200 held-out synthetic images; the full 500-image figures are in the closing notes.
    metrics = evaluate(DEFAULT_CFG, DEFAULT_WEIGHTS, DEFAULT_QMODEL, test_images=200)
    float_map = metrics["float"]["map50_all_point"]
    int8_map = metrics["int8"]["map50_all_point"]
    assert float_map >= 0.90 and int8_map >= 0.90, metrics
    assert int8_map >= float_map - 0.01, metrics


def make_train(outdir, *options):
    """``make train`` (one BLAS thread) into ``outdir``, with extra ``owlet train`` options."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "owlet.cli", "train", "--synthetic", "--qat",
                    "-o", str(outdir), *options], check=True, env=env)
    return outdir / "owlet-tiny_final.weights", outdir / "owlet-tiny.npz"


@pytest.mark.slow
def test_make_train_reaches_the_shipped_accuracy(tmp_path):
    """The whole ``make train`` (about 10 minutes). Its float weights are not the shipped bytes on
    every machine -- BLAS sums round differently across CPUs and OpenBLAS kernels -- so it must
    reach what the shipped model reaches (float mAP@0.5 0.9702, int8 0.9716 on the 500 test
    images; another machine's retraining gave 0.9713 and 0.9694), with int8 within a point of
    float, and the integers must be exactly the quantizer's image of the float weights."""
    weights, qmodel = make_train(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_images"] == 500, metrics
    float_map = metrics["float"]["map50_all_point"]
    int8_map = metrics["int8"]["map50_all_point"]
    assert float_map >= 0.95 and int8_map >= 0.95, metrics
    assert abs(int8_map - float_map) <= 0.01, metrics
    assert_integers_are_the_quantized_float_weights(weights, qmodel)


@pytest.mark.slow
def test_make_train_is_deterministic_on_one_machine(tmp_path):
    """Two runs of the same training on one machine give the same bytes. The first 20 batches
    (the last 4 of them quantization-aware) exercise every step of the run at 1 % of its cost."""
    short = ("--max-batches", "20", "--eval-every", "20", "--test-images", "16")
    first = make_train(tmp_path / "first", *short)
    second = make_train(tmp_path / "second", *short)
    assert first[0].read_bytes() == second[0].read_bytes()
    ours, again = np.load(first[1]), np.load(second[1])
    assert sorted(ours.files) == sorted(again.files)
    for key in ours.files:
        assert np.array_equal(ours[key], again[key]), key
