"""Quantization-aware training: the fake-quant rule, the folded-BN algebra and its gradient, and
agreement of the QAT forward pass with the integer golden model on the exported network."""

import math

import numpy as np
import pytest

import model.train.net as net_module
from model.golden import dequantize_output, forward_int, quantize_input
from model.train.gradcheck import numeric_grad, rel_err, small_network
from model.train.net import TrainNet
from model.train.qat import QATState, export_quantized, fake_quant_activation
from model.train.region import region_loss, region_targets

TRUTHS = [np.array([[0.3, 0.4, 0.3, 0.5, 2], [0.7, 0.7, 0.5, 0.3, 0]]),
          np.array([[0.5, 0.2, 0.6, 0.3, 1]])]


def test_fake_quant_activation_rounds_half_up_and_saturates():
    s = 0.5
    y = np.array([0.25, -0.25, 0.75, -0.75, 0.1, 63.5, 63.75, 100.0, -64.0, -64.25, -80.0])
    q, mask = fake_quant_activation(y, s)
    for v, got, m in zip(y, q, mask, strict=True):
        n = math.floor(v / s + 0.5)  # round half up, then saturate to int8
        assert got == min(max(n, -128), 127) * s
        assert m == (-128 <= n <= 127)


@pytest.fixture
def no_rounding(monkeypatch):
    """Make every quantizer the identity, leaving the QAT folding algebra alone."""
    monkeypatch.setattr(net_module, "quantize_weights", lambda w: (w, np.ones(w.shape[0])))
    monkeypatch.setattr(net_module, "quantize_bias", lambda b, s_w, s_x: b / (s_w * s_x))
    monkeypatch.setattr(net_module, "quantize_input", lambda x: x * 127.0)
    monkeypatch.setattr(net_module, "fake_quant_activation",
                        lambda y, s: (y, np.ones(y.shape, bool)))


def test_frozen_bn_qat_gradient(no_rounding):
    # Frozen BN: y = conv(x, w·γ/D_R) + β - γ·mean_R/D_R, a smooth function of every parameter.
    rng = np.random.default_rng(7)
    network = small_network(rng)
    for ly in network.layers[:-1]:
        if getattr(ly, "batch_normalize", False):
            ly.rolling_mean[...] = rng.normal(0, 0.3, ly.filters)
            ly.rolling_variance[...] = rng.uniform(0.5, 2, ly.filters)
    qat = QATState(warmup=0, bn_freeze=0)
    net = TrainNet(network, qat)
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    targets, _ = region_targets(net.forward(x, train=True), TRUTHS, net.region, seen=100)

    def f():
        return region_loss(net.forward(x, train=True), targets, net.region)[0]["total"]

    net.zero_grad()
    _, dout = region_loss(net.forward(x, train=True), targets, net.region)
    net.backward(dout)
    for block, name, p, _ in net.params():
        assert rel_err(block.grads[name], numeric_grad(f, p)) < 1e-6, (block.index, name)


def test_bn_correction_reproduces_batch_norm_training_output(no_rounding):
    # Before the freeze, c·conv(x, w·γ/D_R) + β - γ·mean_B/D_B with c = D_R/D_B equals the float
    # training-mode batch norm γ·(conv(x, w) - mean_B)/D_B + β.
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    float_out = TrainNet(small_network(np.random.default_rng(9))).forward_all(x, True)
    qat_out = TrainNet(small_network(np.random.default_rng(9)),
                       QATState(warmup=0, bn_freeze=10)).forward_all(x, True)
    for a, b in zip(float_out, qat_out, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


def test_qat_forward_matches_golden_model_on_export():
    rng = np.random.default_rng(10)
    network = small_network(rng)
    qat = QATState(warmup=2, bn_freeze=3, momentum=0.5)
    net = TrainNet(network, qat)
    for _ in range(4):  # a few training steps: BN statistics, ranges, then frozen
        x = rng.uniform(0, 1, size=(2, 8, 8, 3))
        net.zero_grad()
        net.train_step(x, TRUTHS, seen=100)
        qat.step += 1
    assert qat.frozen_bn and qat.quantize_activations
    qnet = export_quantized(network, qat)
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    ours = net.forward_all(x, train=False)
    for b in range(2):
        gold = forward_int(qnet, quantize_input(x[b].transpose(2, 0, 1)))
        for i, q in enumerate(qnet.layers[:-2]):
            if q.kind == "convolutional":  # the exported scale is the range QAT learned
                assert q.out_scale == qat.ranges[i] / 127
            scale = q.out_scale if q.kind == "convolutional" else q.scale
            mine = np.rint(ours[i][b].transpose(2, 0, 1) / scale)
            diff = np.abs(mine - gold[i].astype(np.int64))
            # The golden model's 16-bit multiplier can move a value across a rounding boundary.
            assert diff.max() <= 1 and (diff == 0).mean() > 0.98, i
        last = dequantize_output(qnet.layers[-2], gold[-2])
        lsb = np.max(qnet.layers[-2].output_scale)
        np.testing.assert_allclose(ours[-1][b].transpose(2, 0, 1), last,
                                   atol=lsb * 1000, rtol=0.02)
