"""Region loss: hand-worked target assignment and loss value, finite-difference gradients of the
loss alone and of a whole small network (conv+BN+leaky, both maxpools, linear 1x1, region)."""

import math

import numpy as np
import pytest

from model.train.gradcheck import make_region, numeric_grad, rel_err, small_network
from model.train.net import TrainNet
from model.train.region import RegionTargets, region_loss, region_targets

RTOL = 1e-6


HAND_REGION = dict(object_scale=5, noobject_scale=1, class_scale=1, coord_scale=1, thresh=0.2,
                   rescore=1, bias_match=1)


@pytest.mark.parametrize("seen", [0, 12800])
def test_region_targets_and_loss_hand_worked(seen):
    # 2x2 grid, anchors (0.5, 0.5) and (1.5, 1.0) cells; raw output 0 so every box sits at its
    # cell centre with its anchor's size: anchor 0 -> 0.25x0.25, anchor 1 -> 0.75x0.5 (normalized).
    region = make_region(2, 2, 2, 2, [0.5, 0.5, 1.5, 1.0], **HAND_REGION)
    out = np.zeros((2, 2, 2, 14))
    truths = [np.array([[0.7, 0.3, 0.6, 0.4, 1]]), np.zeros((0, 5))]
    t, stats = region_targets(out, truths, region, seen)
    # Truth lands in cell i = int(1.4) = 1, j = int(0.6) = 0. Shape IoUs: anchor 0:
    # .0625/.24 = .26; anchor 1: .24/.375 = .64 -> anchor 1.
    cell = (0, 0, 1, 1)
    np.testing.assert_allclose(t.coord[cell], [0.4, 0.6, math.log(0.8), math.log(0.8)])
    assert t.coord_scale[cell] == pytest.approx(2 - 0.24)
    # Predicted box (0.75, 0.25, 0.75, 0.5) vs truth: overlap 0.6 x 0.4 = .24, union .375.
    assert t.obj[cell] == pytest.approx(0.64)
    assert t.obj_scale[cell] == 5
    assert t.cls[cell] == 1 and t.cls_scale[cell] == 1
    assert stats.count == 1 and stats.iou == pytest.approx(0.64) and stats.recall == 1
    # Ignore rule: anchor 0 of the same cell overlaps the truth by .0625/.24 = .26 > thresh .2;
    # anchor 1 of cell (0, 0) only by .09/.525 = .17.
    expect_obj_scale = np.ones((2, 2, 2, 2))
    expect_obj_scale[0, 0, 1, 0] = 0
    expect_obj_scale[cell] = 5
    np.testing.assert_array_equal(t.obj_scale, expect_obj_scale)
    # Prior matching: every other box is pulled to (.5, .5, 0, 0) with scale .01 while seen < 12800.
    prior = np.full((2, 2, 2, 2), 0.01 if seen < 12800 else 0.0)
    prior[cell] = 1.76
    np.testing.assert_allclose(t.coord_scale, prior)
    assert (t.cls >= 0).sum() == 1

    loss, _ = region_loss(out, t, region)
    coord = 0.5 * 1.76 * ((0.4 - 0.5) ** 2 + (0.6 - 0.5) ** 2 + 2 * math.log(0.8) ** 2)
    obj = 0.5 * 5 * (0.64 - 0.5) ** 2
    noobj = 14 * 0.5 * 0.5**2  # 16 boxes minus the assigned one and the ignored one
    assert loss["coord"] == pytest.approx(coord)  # prior targets equal σ(0) and 0: no loss
    assert loss["obj"] == pytest.approx(obj)
    assert loss["noobj"] == pytest.approx(noobj)
    assert loss["cls"] == pytest.approx(math.log(2))
    assert loss["total"] == pytest.approx(coord + obj + noobj + math.log(2))


def test_later_truth_overwrites_same_cell_and_anchor():
    region = make_region(2, 2, 2, 2, [0.5, 0.5, 1.5, 1.0], **HAND_REGION)
    truths = [np.array([[0.7, 0.3, 0.6, 0.4, 1], [0.8, 0.4, 0.6, 0.4, 0]])]
    t, _ = region_targets(np.zeros((1, 2, 2, 14)), truths, region, 20000)
    assert t.cls[0, 0, 1, 1] == 0
    assert t.coord[0, 0, 1, 1, 0] == pytest.approx(0.6)


def test_region_loss_gradient():
    rng = np.random.default_rng(4)
    region = make_region(3, 2, 2, 3, [1, 1, 2, 1.5])
    out = rng.normal(size=(2, 3, 2, 16))
    shape = (2, 3, 2, 2)
    cls = rng.integers(-1, 3, size=shape)
    t = RegionTargets(
        coord=rng.normal(size=shape + (4,)), coord_scale=rng.uniform(0, 2, shape),
        obj=rng.uniform(0, 1, shape), obj_scale=rng.uniform(0, 5, shape),
        cls=cls, cls_scale=np.where(cls >= 0, rng.uniform(0.5, 1.5, shape), 0),
    )
    _, g = region_loss(out, t, region)
    num = numeric_grad(lambda: region_loss(out, t, region)[0]["total"], out)
    assert rel_err(g, num) < RTOL


def test_whole_network_gradient_with_targets_frozen():
    rng = np.random.default_rng(5)
    net = TrainNet(small_network(rng))
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    truths = [np.array([[0.3, 0.4, 0.3, 0.5, 2], [0.7, 0.7, 0.5, 0.3, 0]]),
              np.array([[0.5, 0.2, 0.6, 0.3, 1]])]
    # Targets are darknet's stop-gradient assignment: take them at the base point and hold them.
    targets, _ = region_targets(net.forward(x, train=True), truths, net.region, seen=100)

    def f():
        return region_loss(net.forward(x, train=True), targets, net.region)[0]["total"]

    net.zero_grad()
    out = net.forward(x, train=True)
    _, dout = region_loss(out, targets, net.region)
    dx = net.backward(dout)
    assert rel_err(dx, numeric_grad(f, x)) < RTOL
    for block, name, p, _ in net.params():
        assert rel_err(block.grads[name], numeric_grad(f, p)) < RTOL, (block.index, name)


def test_train_step_accumulates_over_subdivisions():
    # Gradients are sums over images and accumulate across subdivisions until zero_grad.
    rng = np.random.default_rng(6)
    net = TrainNet(small_network(rng))
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    truths = [np.array([[0.3, 0.4, 0.3, 0.5, 2]]), np.array([[0.5, 0.2, 0.6, 0.3, 1]])]
    net.zero_grad()
    loss1, _ = net.train_step(x, truths, seen=20000)
    g1 = {(b.index, n): b.grads[n].copy() for b, n, _, _ in net.params()}
    loss2, _ = net.train_step(x, truths, seen=20000)
    assert loss2["total"] == pytest.approx(loss1["total"])
    for b, n, _, _ in net.params():
        np.testing.assert_allclose(b.grads[n], 2 * g1[(b.index, n)], rtol=1e-10)
