"""Darknet's SGD update and learning-rate policy, against numbers worked by hand."""

import numpy as np
import pytest

from model.train.optim import SGD, LRPolicy


class FakeBlock:
    def __init__(self):
        self.grads = {}


def test_steps_policy_with_burn_in():
    p = LRPolicy.from_options({"learning_rate": "0.01", "burn_in": "100", "policy": "steps",
                               "steps": "1400,1800", "scales": ".1,.1", "max_batches": "2000"})
    assert p.rate(0) == 0
    assert p.rate(50) == pytest.approx(0.01 * 0.5**4)  # darknet's default power is 4
    assert p.rate(100) == pytest.approx(0.01)
    assert p.rate(1399) == pytest.approx(0.01)
    assert p.rate(1400) == pytest.approx(0.001)
    assert p.rate(1800) == pytest.approx(0.0001)
    assert p.max_batches == 2000
    with pytest.raises(ValueError, match="poly"):
        LRPolicy.from_options({"policy": "poly"})
    with pytest.raises(ValueError, match="2 steps but 1 scales"):
        LRPolicy.from_options({"policy": "steps", "steps": "1,2", "scales": ".1"})


def test_sgd_momentum_and_decay_on_weights_only():
    # momentum .5, decay .1, batch 2, lr .1; gradients (sums over the batch) 4 then 2.
    # weight w0 = 1: u = -4 - .1·2·1 = -4.2, w = 1 + .05·(-4.2) = .79, u <- -2.1;
    #                u = -2.1 - 2 - .1·2·.79 = -4.258, w = .79 + .05·(-4.258) = .5771.
    # bias b0 = 0 (no decay): u = -4, b = -.2, u <- -2; u = -4, b = -.4.
    blk = FakeBlock()
    w, b = np.array([1.0]), np.array([0.0])
    opt = SGD([(blk, "weights", w, True), (blk, "biases", b, False)], momentum=0.5, decay=0.1)
    for g, ew, eb in ((4.0, 0.79, -0.2), (2.0, 0.5771, -0.4)):
        blk.grads = {"weights": np.array([g]), "biases": np.array([g])}
        opt.step(lr=0.1, batch=2)
        assert w[0] == pytest.approx(ew) and b[0] == pytest.approx(eb)
