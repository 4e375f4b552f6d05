"""The integer golden model against its loop oracles and the rules of docs/fixed-point.md."""

from fractions import Fraction

import numpy as np
import pytest

from model.golden import (
    conv2d_int,
    conv2d_int_naive,
    maxpool_int,
    maxpool_int_naive,
    quantize_input,
    requantize,
    requantize_naive,
)

RNG = np.random.default_rng(20261121)


def random_int8(shape, low=-128, high=127):
    return RNG.integers(low, high + 1, shape).astype(np.int8)


def test_input_quantization_rule():
    # Every exact half step k/254 and random values; oracle: exact rational round half up.
    x = np.concatenate([np.arange(255) / 254.0, RNG.random(500)]).astype(np.float32)
    q = quantize_input(x.reshape(1, 1, -1)).ravel()
    for value, got in zip(x, q, strict=True):
        scaled = Fraction(float(value)) * 127
        expected = min(127, max(0, int((scaled + Fraction(1, 2)).__floor__())))
        assert got == expected, f"x={value!r}: expected {expected}, got {got}"


@pytest.mark.parametrize(
    ("channels", "out_channels", "h", "w", "size", "stride", "padding"),
    [(3, 4, 7, 5, 3, 1, 1), (5, 3, 6, 9, 3, 2, 1), (4, 6, 5, 5, 1, 1, 0), (2, 2, 8, 7, 1, 2, 0),
     (1, 1, 1, 1, 3, 1, 1), (6, 2, 4, 3, 3, 1, 0)],
)
def test_conv2d_int_matches_naive(channels, out_channels, h, w, size, stride, padding):
    x = random_int8((channels, h, w))
    wq = random_int8((out_channels, channels, size, size), low=-127)
    bias = RNG.integers(-(2**20), 2**20, out_channels).astype(np.int32)
    fast = conv2d_int(x, wq, bias, stride, padding)
    assert np.array_equal(fast, conv2d_int_naive(x, wq, bias, stride, padding))


def test_conv2d_int_refuses_a_channel_mismatch():
    # Without the check, im2col's 4·9 rows against the weights' 3·9 columns would fail deep in
    # a matrix product, or (for a multiple) silently mix channels.
    x = random_int8((4, 5, 5))
    wq = random_int8((2, 3, 3, 3), low=-127)
    with pytest.raises(ValueError, match=r"conv2d_int: x has 4 channels \(shape \(4, 5, 5\)\), "
                                         r"w has 3 input channels \(shape \(2, 3, 3, 3\)\)"):
        conv2d_int(x, wq, np.zeros(2, np.int32), 1, 1)


def test_conv2d_int_exact_beyond_float32_mantissa():
    # 2700 products of magnitude 16256 sum to 43.9 M > 2**24: exact only because of chunking.
    channels = 300
    x = np.full((channels, 3, 3), -128, np.int8)
    x[::7] = 127
    wq = np.full((2, channels, 3, 3), 127, np.int8)
    wq[1, ::3] = -127
    bias = np.array([2**30, -(2**30)], np.int32)
    fast = conv2d_int(x, wq, bias, 1, 1)
    assert np.array_equal(fast, conv2d_int_naive(x, wq, bias, 1, 1))
    assert abs(int(fast[0, 1, 1]) - 2**30) > 2**24


def test_conv_padding_is_zero():
    x = random_int8((3, 5, 6))
    wq = random_int8((2, 3, 3, 3), low=-127)
    bias = np.zeros(2, np.int32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=0)
    assert np.array_equal(conv2d_int(x, wq, bias, 1, 1), conv2d_int(padded, wq, bias, 1, 0))


def test_requantize_rounding_half_up():
    # Worked by hand: y = floor(acc * m / 2**shift + 1/2).
    acc = np.array([[1, 3, 5, -1, -3, -5, 2, -2]])
    one = np.array([1])
    got = requantize(acc, one, one, one)
    assert got.tolist() == [[1, 2, 3, 0, -1, -2, 1, -1]]
    # m = 3, shift = 2: acc = 2 -> 6/4 = 1.5 -> 2; acc = -2 -> -1.5 -> -1; acc = 1 -> 0.75 -> 1.
    got = requantize(np.array([[2, -2, 1, -1]]), np.array([3]), np.array([3]), np.array([2]))
    assert got.tolist() == [[2, -1, 1, -1]]


def test_requantize_uses_negative_multiplier_below_zero():
    # m_pos = 10, m_neg = 1, shift = 1: +4 -> 20, -4 -> -2 (a tenth of the slope).
    got = requantize(np.array([[4, -4, 0]]), np.array([10]), np.array([1]), np.array([1]))
    assert got.tolist() == [[20, -2, 0]]


def test_requantize_saturates_both_ends():
    acc = np.array([[2**31 - 1, -(2**31), 300, -300]])
    got = requantize(acc, np.array([65535]), np.array([65535]), np.array([1]))
    assert got.tolist() == [[127, -128, 127, -128]]
    # The smallest multiplier and largest shift still round, never wrap.
    got = requantize(acc, np.array([1]), np.array([1]), np.array([47]))
    assert got.tolist() == [[0, 0, 0, 0]]


def test_requantize_matches_naive():
    o = 6
    acc = RNG.integers(-(2**31), 2**31, (o, 5, 4))
    acc[:, 0, 0] = [2**31 - 1, -(2**31), 0, 1, -1, 12345]
    m_pos = RNG.integers(0, 65536, o)
    m_neg = RNG.integers(0, 65536, o)
    shift = RNG.integers(1, 48, o)
    m_pos[0], m_neg[1], shift[2], shift[3] = 65535, 65535, 1, 47
    assert np.array_equal(
        requantize(acc, m_pos, m_neg, shift), requantize_naive(acc, m_pos, m_neg, shift)
    )


POOLS = [(2, 2, 1), (2, 1, 1), (3, 2, 2), (3, 1, 2)]


@pytest.mark.parametrize(("size", "stride", "padding"), POOLS)
@pytest.mark.parametrize(("h", "w"), [(6, 6), (7, 5), (1, 1), (13, 13), (2, 9)])
def test_maxpool_matches_naive(size, stride, padding, h, w):
    x = random_int8((3, h, w))
    assert np.array_equal(
        maxpool_int(x, size, stride, padding), maxpool_int_naive(x, size, stride, padding)
    )


def test_maxpool_padding_never_wins():
    # All values negative: a zero (or any) pad would win at the bottom/right edge.
    x = np.full((1, 4, 4), -100, np.int8)
    x[0, 3, 3] = -128
    out = maxpool_int(x, 2, 1, 1)
    assert out.shape == (1, 4, 4)
    assert out[0, 3, 3] == -128 and out[0, 3, 2] == -100 and out[0, 2, 3] == -100
    odd = maxpool_int(np.full((1, 5, 5), -7, np.int8), 2, 2, 1)
    assert odd.shape == (1, 3, 3) and np.all(odd == -7)
