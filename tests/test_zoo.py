"""The shipped default detector: consistent files, the accuracy it claims, and reproducible."""

from __future__ import annotations

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


def test_shipped_int8_model_is_the_quantized_float_weights():
    # QAT exports the quantizer's integers for its learned scales: re-quantizing the shipped
    # darknet weights with the shipped scales must give the shipped integers exactly.
    net = load_darknet(DEFAULT_CFG, DEFAULT_WEIGHTS)
    shipped = QuantizedNetwork.load(DEFAULT_QMODEL)
    thresholds = {i: layer.out_scale * 127.0 for i, layer in enumerate(shipped.layers)
                  if layer.kind == "convolutional" and not layer.output_int32}
    again = quantize_network(net, thresholds=thresholds)
    assert shipped.calibration["method"] == "qat"
    for index, (a, b) in enumerate(zip(shipped.layers, again.layers, strict=True)):
        assert a.kind == b.kind, index
        if a.kind == "convolutional":
            for name in ARRAYS:
                assert np.array_equal(getattr(a, name), getattr(b, name)), (index, name)


def test_shipped_detector_accuracy_float_and_int8():
    # 200 held-out synthetic images; the full 500-image figures are in the closing notes.
    metrics = evaluate(DEFAULT_CFG, DEFAULT_WEIGHTS, DEFAULT_QMODEL, test_images=200)
    float_map = metrics["float"]["map50_all_point"]
    int8_map = metrics["int8"]["map50_all_point"]
    assert float_map >= 0.90 and int8_map >= 0.90, metrics
    assert int8_map >= float_map - 0.01, metrics


@pytest.mark.slow
def test_make_train_reproduces_the_shipped_model(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "owlet.cli", "train", "--synthetic", "--qat",
                    "-o", str(tmp_path)], check=True, env=env)
    assert (tmp_path / "owlet-tiny_final.weights").read_bytes() == DEFAULT_WEIGHTS.read_bytes()
    ours, shipped = np.load(tmp_path / "owlet-tiny.npz"), np.load(DEFAULT_QMODEL)
    assert sorted(ours.files) == sorted(shipped.files)
    for key in shipped.files:
        assert np.array_equal(ours[key], shipped[key]), key
