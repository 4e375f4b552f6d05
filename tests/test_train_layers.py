"""Layer forward passes against naive loops, backward passes against central finite differences.

Everything runs in float64; a gradient is accepted when
``|analytic - numeric| / (|analytic| + |numeric|) < 1e-6`` (vector 2-norms).
"""

import numpy as np
import pytest

from model.train import layers as L
from model.train.gradcheck import numeric_grad, rel_err

RTOL = 1e-6


def naive_conv(x, w, stride, pad):
    """Darknet convolution by definition (NHWC in, NHWC out)."""
    b, h, wd, c = x.shape
    o, _, k, _ = w.shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    y = np.zeros((b, ho, wo, o))
    for n in range(b):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    s = 0.0
                    for ci in range(c):
                        for ky in range(k):
                            for kx in range(k):
                                yy, xx = i * stride + ky - pad, j * stride + kx - pad
                                if 0 <= yy < h and 0 <= xx < wd:
                                    s += w[f, ci, ky, kx] * x[n, yy, xx, ci]
                    y[n, i, j, f] = s
    return y


def naive_maxpool(x, size, stride, padding):
    """Darknet forward_maxpool_layer by definition: returns output and winning flat indexes."""
    b, h, w, c = x.shape
    ho = (h + padding - size) // stride + 1
    wo = (w + padding - size) // stride + 1
    off = -(padding // 2)
    y = np.zeros((b, ho, wo, c))
    win = np.zeros((b, ho, wo, c, 2), dtype=int)
    for n in range(b):
        for k in range(c):
            for i in range(ho):
                for j in range(wo):
                    best, arg = -np.inf, (-1, -1)
                    for dy in range(size):
                        for dx in range(size):
                            yy, xx = off + i * stride + dy, off + j * stride + dx
                            v = x[n, yy, xx, k] if (0 <= yy < h and 0 <= xx < w) else -np.inf
                            if v > best:
                                best, arg = v, (yy, xx)
                    y[n, i, j, k] = best
                    win[n, i, j, k] = arg
    return y, win


@pytest.mark.parametrize(
    "shape,k,stride,pad",
    [((2, 5, 6, 3), 3, 1, 1), ((2, 7, 5, 2), 3, 2, 1), ((1, 4, 4, 3), 1, 1, 0),
     ((1, 6, 6, 2), 2, 2, 0)],
)
def test_conv_forward_matches_naive_and_gradients(shape, k, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    w = rng.normal(size=(4, shape[3], k, k))
    y, cache = L.conv_forward(x, w, stride, pad)
    np.testing.assert_allclose(y, naive_conv(x, w, stride, pad), rtol=1e-12, atol=1e-12)
    r = rng.normal(size=y.shape)

    def f():
        return float((L.conv_forward(x, w, stride, pad)[0] * r).sum())

    dx, dw = L.conv_backward(r, cache, w)
    assert rel_err(dx, numeric_grad(f, x)) < RTOL
    assert rel_err(dw, numeric_grad(f, w)) < RTOL


def test_batchnorm_forward_statistics_and_gradient():
    rng = np.random.default_rng(1)
    z = rng.normal(2.0, 3.0, size=(3, 4, 5, 2))
    xhat, mean, var, cache = L.batchnorm_forward(z)
    for c in range(2):
        v = z[..., c].ravel()
        m = sum(v) / len(v)
        uvar = sum((t - m) ** 2 for t in v) / (len(v) - 1)  # unbiased, as darknet variance_cpu
        assert mean[c] == pytest.approx(m, rel=1e-12)
        assert var[c] == pytest.approx(uvar, rel=1e-12)
        np.testing.assert_allclose(xhat[..., c], (z[..., c] - m) / (np.sqrt(uvar) + 1e-6))
    r = rng.normal(size=z.shape)

    def f():
        return float((L.batchnorm_forward(z)[0] * r).sum())

    assert rel_err(L.batchnorm_backward(r, cache), numeric_grad(f, z)) < RTOL


def test_leaky_forward_and_gradient():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 3, 4))
    y = L.leaky_forward(x)
    np.testing.assert_array_equal(y, [[[[v if v > 0 else 0.1 * v for v in px] for px in row]
                                       for row in img] for img in x])
    r = rng.normal(size=x.shape)
    num = numeric_grad(lambda: float((L.leaky_forward(x) * r).sum()), x)
    assert rel_err(L.leaky_backward(r, y), num) < RTOL


@pytest.mark.parametrize(
    "shape,size,stride,padding",
    [((2, 6, 6, 3), 2, 2, 1), ((2, 5, 5, 2), 2, 2, 1), ((2, 4, 5, 3), 2, 1, 1),
     ((1, 7, 7, 2), 3, 2, 2)],
)
def test_maxpool_matches_darknet_loop_and_gradient(shape, size, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape)
    y, cache = L.maxpool_forward(x, size, stride, padding)
    ref, _ = naive_maxpool(x, size, stride, padding)
    np.testing.assert_array_equal(y, ref)
    r = rng.normal(size=y.shape)
    num = numeric_grad(lambda: float((L.maxpool_forward(x, size, stride, padding)[0] * r).sum()), x)
    assert rel_err(L.maxpool_backward(r, cache), num) < RTOL


def test_maxpool_gradient_goes_to_first_maximum():
    # All-equal input: every window ties; darknet's strict '>' keeps the first (top-left) tap.
    x = np.ones((1, 4, 4, 1))
    for stride in (1, 2):
        y, cache = L.maxpool_forward(x, 2, stride, 1)
        dy = np.ones_like(y)
        dx = L.maxpool_backward(dy, cache)
        _, win = naive_maxpool(x, 2, stride, 1)
        expect = np.zeros_like(x)
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                yy, xx = win[0, i, j, 0]
                expect[0, yy, xx, 0] += 1
        np.testing.assert_array_equal(dx, expect)
    # Stride 1 keeps the size and pads bottom/right only.
    assert L.maxpool_forward(x, 2, 1, 1)[0].shape == x.shape
