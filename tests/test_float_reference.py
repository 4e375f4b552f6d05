"""The float reference against the real darknet's layer outputs and against loop oracles."""

from __future__ import annotations

import numpy as np
import pytest

from model.darknet import load_darknet
from model.float_ref import (
    batchnorm,
    conv2d,
    conv2d_naive,
    fold_batchnorm,
    forward,
    leaky,
    maxpool,
    maxpool_naive,
    region_forward,
)
from model.network import ConvLayer, Network, RegionLayer
from model.windows import im2col
from model.zoo import REFERENCE_CFG, REFERENCE_WEIGHTS

# Tolerance of the BLAS (exact=False) path, relative to the layer's largest magnitude: the
# summation order differs from darknet's, so a few float32 ulps of the largest partial sums.
FAST_RTOL = 1e-5


@pytest.fixture(scope="module")
def darknet_run(darknet_tiny96):
    """(network, darknet's input, darknet's per-layer outputs) of the darknet-tiny96 reference."""
    ref = darknet_tiny96
    net = load_darknet(REFERENCE_CFG, REFERENCE_WEIGHTS)
    x = np.fromfile(ref / "input.f32", dtype="<f4").reshape(net.input_shape)
    outputs = [
        np.fromfile(ref / f"layer{i:02d}.f32", dtype="<f4").reshape(layer.out_shape)
        for i, layer in enumerate(net.layers)
    ]
    return net, x, outputs


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``: the error relative to the layer's largest magnitude."""
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def test_every_layer_is_bit_identical_to_darknet(darknet_run):
    net, x, expected = darknet_run
    outputs = forward(net, x)
    assert len(outputs) == len(net.layers)
    for i, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        assert got.dtype == np.float32 and got.shape == want.shape, i
        # not a tolerance: the exact path reproduces darknet's float32 rounding step by step
        assert np.array_equal(got, want), f"layer {i}: max rel error {max_rel_error(got, want)}"


def test_blas_path_agrees_to_tolerance(darknet_run):
    net, x, expected = darknet_run
    for i, (got, want) in enumerate(zip(forward(net, x, exact=False), expected, strict=True)):
        assert max_rel_error(got, want) <= FAST_RTOL, i


def test_each_layer_alone_from_darknets_input(darknet_run):
    """Feeding every layer darknet's own input isolates per-layer errors from propagated ones."""
    net, x, expected = darknet_run
    for i, layer in enumerate(net.layers):
        inp = x if i == 0 else expected[i - 1]
        single = forward(Network(input_shape=layer.in_shape, layers=[layer]), inp)[0]
        assert np.array_equal(single, expected[i]), i


CONV_CASES = [
    # (C, H, W, O, K, stride, padding)
    (3, 7, 5, 4, 3, 1, 1),
    (2, 9, 6, 3, 3, 2, 1),
    (5, 5, 8, 2, 1, 1, 0),
    (1, 6, 7, 2, 1, 2, 0),
    (4, 8, 8, 3, 3, 2, 0),
    (2, 5, 4, 3, 3, 1, 2),
]


@pytest.mark.parametrize(("c", "h", "w", "o", "k", "stride", "padding"), CONV_CASES)
def test_conv2d_matches_loop_oracle(c, h, w, o, k, stride, padding):
    rng = np.random.default_rng([c, h, w, o, k, stride, padding])
    x = rng.standard_normal((c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
    want = conv2d_naive(x, wt, stride, padding)
    assert want.shape == (
        o,
        (h + 2 * padding - k) // stride + 1,
        (w + 2 * padding - k) // stride + 1,
    )
    assert np.array_equal(conv2d(x, wt, stride, padding), want)
    fast = conv2d(x, wt, stride, padding, exact=False)
    np.testing.assert_allclose(fast, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_conv2d_oracle_against_float64_sum():
    """The loop oracle itself is checked against an independent float64 sum via im2col."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    wt = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    want = wt.reshape(2, -1).astype(np.float64) @ im2col(x, 3, 2, 1).astype(np.float64)
    got = conv2d_naive(x, wt, 2, 1).reshape(2, -1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


POOL_CASES = [
    # (C, H, W, size, stride, padding)
    (3, 6, 6, 2, 2, 1),
    (2, 7, 5, 2, 2, 1),
    (2, 5, 7, 2, 1, 1),
    (1, 4, 4, 2, 1, 1),
    (2, 7, 6, 3, 1, 2),
    (2, 9, 7, 3, 2, 2),
    (1, 5, 5, 1, 1, 0),
    (2, 6, 5, 2, 2, 0),
    (1, 5, 6, 2, 1, 3),  # offset -1: top/left padding too
]


@pytest.mark.parametrize(("c", "h", "w", "size", "stride", "padding"), POOL_CASES)
def test_maxpool_matches_loop_oracle(c, h, w, size, stride, padding):
    rng = np.random.default_rng([c, h, w, size, stride, padding])
    x = -np.abs(rng.standard_normal((c, h, w))).astype(np.float32)  # all negative: padding loses
    want = maxpool_naive(x, size, stride, padding)
    assert np.array_equal(maxpool(x, size, stride, padding), want)


def test_size2_stride1_pool_pads_bottom_right_only():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4) * -1  # decreasing: max is top-left
    y = maxpool(x, 2, 1, 1)
    assert y.shape == x.shape
    # window (i, j) covers rows i..i+1, cols j..j+1 (clipped at the bottom/right edge)
    assert np.array_equal(y[0], x[0])
    assert np.array_equal(maxpool_naive(x, 2, 1, 1), x)


def test_leaky_negative_slope_is_double_tenth():
    x = np.array([-3.0, -1e-3, 0.0, 2.5, -7.7], np.float32)
    want = np.where(x > 0, x, (np.float64(0.1) * x).astype(np.float32))
    assert np.array_equal(leaky(x), want)


def test_batchnorm_folding_matches_float(darknet_run):
    """docs/fixed-point.md section 2: the folded float64 conv equals conv + batchnorm."""
    net, x, expected = darknet_run
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, ConvLayer):
            continue
        inp = x if i == 0 else expected[i - 1]
        w_f, b_f = fold_batchnorm(layer)
        assert w_f.dtype == b_f.dtype == np.float64
        assert w_f.shape == layer.weights.shape and b_f.shape == (layer.filters,)
        cols = im2col(inp, layer.size, layer.stride, layer.padding).astype(np.float64)
        folded = (w_f.reshape(layer.filters, -1) @ cols + b_f[:, None]).reshape(layer.out_shape)
        y = conv2d(inp, layer.weights, layer.stride, layer.padding)
        if layer.batch_normalize:
            y = batchnorm(y, layer.scales, layer.biases, layer.rolling_mean, layer.rolling_variance)
        else:
            y = y + layer.biases[:, None, None]
            np.testing.assert_array_equal(w_f, layer.weights)
            np.testing.assert_array_equal(b_f, layer.biases)
        assert max_rel_error(y, folded) <= FAST_RTOL, i


def test_region_layer_from_darknets_input(darknet_run):
    net, _, expected = darknet_run
    region = net.layers[14]
    assert np.array_equal(region_forward(expected[13], region), expected[14])
    out = expected[14].reshape(5, 8, 3, 3)
    np.testing.assert_allclose(out[:, 5:].sum(axis=1), 1, rtol=1e-6)
    assert np.array_equal(out[:, 2:4], expected[13].reshape(5, 8, 3, 3)[:, 2:4])


def test_region_without_softmax_is_logistic():
    layer = RegionLayer((2 * 7, 2, 3), (2 * 7, 2, 3), np.ones((2, 2), np.float32), 2, 4, 2, False)
    x = np.random.default_rng(3).standard_normal((14, 2, 3)).astype(np.float32) * 4
    y = region_forward(x, layer).reshape(2, 7, 2, 3)
    logistic = 1 / (1 + np.exp(-x.astype(np.float64).reshape(2, 7, 2, 3)))
    for entry in (0, 1, 4, 5, 6):
        np.testing.assert_allclose(y[:, entry], logistic[:, entry], rtol=1e-7)
    assert np.array_equal(y[:, 2:4], x.reshape(2, 7, 2, 3)[:, 2:4])


def test_forward_rejects_wrong_input_shape(darknet_run):
    net, x, _ = darknet_run
    with pytest.raises(ValueError, match="input shape"):
        forward(net, x[:, :-1])
