"""The quantizer's rules (docs/fixed-point.md §2-§4, §7) against independent arithmetic."""

from fractions import Fraction

import numpy as np
import pytest

from model.golden import ACC_BITS, conv2d_int
from model.quant import (
    QuantConv,
    QuantizationError,
    quantize_bias,
    quantize_weights,
    requant_parameters,
)

RNG = np.random.default_rng(7)

# Real multipliers over the whole useful range, including 16-bit and shift-cap boundaries.
MULTIPLIERS = np.concatenate([
    10.0 ** RNG.uniform(-16, 4, 400),
    [65535.0 / 2, 32767.7, 1.0, 0.5, 2.0**-32, 2.0**-47, 1e-20, 16383.99],
])


def test_weights_symmetric_range():
    w = RNG.normal(size=(16, 5, 3, 3)) * 10.0 ** RNG.uniform(-3, 1, (16, 1, 1, 1))
    w[3] = 0.0
    w_q, w_scale = quantize_weights(w)
    assert w_q.dtype == np.int8
    assert w_q.min() >= -127
    peak = np.abs(w_q.reshape(16, -1)).max(axis=1)
    assert np.all(peak[np.arange(16) != 3] == 127) and peak[3] == 0 and w_scale[3] == 1.0
    # Round to nearest: dequantization error at most half a step per channel.
    err = np.abs(w_q * w_scale[:, None, None, None] - w).reshape(16, -1).max(axis=1)
    assert np.all(err <= w_scale / 2 * (1 + 1e-12))


def test_bias_quantization():
    w_scale = 10.0 ** RNG.uniform(-4, -1, 8)
    in_scale = 1 / 127
    b = RNG.normal(size=8)
    b_q = quantize_bias(b, w_scale, in_scale)
    step = w_scale * in_scale
    assert np.all(np.abs(b_q * step - b) <= step / 2 * (1 + 1e-12))


def test_multiplier_normalization():
    m_pos, m_neg, shift = requant_parameters(MULTIPLIERS, "linear")
    assert np.array_equal(m_pos, m_neg)
    for r, m, s in zip(MULTIPLIERS, m_pos, shift, strict=True):
        r, m, s = Fraction(float(r)), int(m), int(s)
        assert 1 <= s <= 47 and 0 <= m <= 65535
        # m is r * 2**s rounded to nearest ...
        assert abs(m - r * 2**s) <= Fraction(1, 2)
        # ... and s is the largest shift that keeps it in 16 bits (unless capped at 47).
        if s < 47:
            assert round(r * 2 ** (s + 1)) > 65535, f"r={float(r)} shift {s} not maximal"


def test_leaky_multiplier_is_tenth():
    m_pos, m_neg, shift = requant_parameters(MULTIPLIERS, "leaky")
    for r, mp, mn, s in zip(MULTIPLIERS, m_pos, m_neg, shift, strict=True):
        exact = Fraction(1, 10) * Fraction(float(r)) * 2 ** int(s)
        assert abs(int(mn) - exact) <= Fraction(1, 2)
        assert abs(int(mp) - Fraction(float(r)) * 2 ** int(s)) <= Fraction(1, 2)
    big = m_pos > 20000
    # 0.1, not 1/8: the ratio stays within rounding of a tenth.
    assert np.all(np.abs(m_neg[big] / m_pos[big] - 0.1) < 1e-3)


def test_multiplier_too_large_is_refused():
    with pytest.raises(QuantizationError, match="channel 1"):
        requant_parameters(np.array([1.0, 32767.75]), "leaky")
    with pytest.raises(QuantizationError, match="activation"):
        requant_parameters(np.array([1.0]), "relu")


def make_conv(channels, out_channels, size, bias):
    return QuantConv(
        in_shape=(channels, 3, 3), out_shape=(out_channels, 3, 3), size=size, stride=1,
        padding=size // 2, activation="leaky",
        weight=np.full((out_channels, channels, size, size), 127, np.int8),
        bias=np.asarray(bias, np.int32), m_pos=np.ones(out_channels, np.int64),
        m_neg=np.ones(out_channels, np.int64), shift=np.ones(out_channels, np.int64),
        in_scale=1 / 127, w_scale=np.ones(out_channels), out_scale=1.0, output_int32=False,
    )


# (input channels, kernel) of every convolution of tiny-YOLOv2-VOC and the reference network.
TINY_YOLO_VOC = [(3, 3), (16, 3), (32, 3), (64, 3), (128, 3), (256, 3), (512, 3), (1024, 3),
                 (1024, 1)]
REFERENCE = [(3, 3), (8, 3), (16, 3), (32, 3), (64, 3), (64, 3), (128, 3), (128, 1)]


@pytest.mark.parametrize(("channels", "size"), TINY_YOLO_VOC + REFERENCE)
def test_accumulator_width_never_overflows(channels, size):
    # The adversarial input: every product at -127*128, plus the most negative bias allowed.
    bias = -(2**24)
    layer = make_conv(channels, 1, size, [bias])
    x = np.full((channels, 3, 3), -128, np.int8)
    acc = conv2d_int(x, layer.weight, layer.bias, 1, size // 2)
    worst = bias - channels * size * size * 127 * 128
    assert int(acc[0, 1, 1]) == worst  # the centre sees the whole window
    assert -layer.max_abs_accumulator == worst
    assert layer.accumulator_bits <= ACC_BITS
    assert -(2 ** (layer.accumulator_bits - 1)) <= worst
