"""YOLOv3 yolo loss: the target assignment and loss worked by hand, finite-difference gradients of
the loss alone, of route and upsample, and of a whole two-head network with a route and an
upsample (float and with the QAT export checked against the golden model)."""

import math

import numpy as np
import pytest

from model.float_ref import upsample_naive
from model.golden import dequantize_output, forward_int, quantize_input
from model.network import Network, RouteLayer
from model.train import layers as L
from model.train.gradcheck import make_yolo, numeric_grad, rel_err, small_yolo_network
from model.train.net import TrainNet
from model.train.qat import QATState, export_quantized
from model.train.yolo import YoloTargets, logistic_xent, yolo_loss, yolo_targets

RTOL = 1e-6
LOG2 = math.log(2)

# A 64×64 network with two heads: A on a 2×2 grid owns anchors 2, 3; B on a 4×4 grid anchors 0, 1.
# Anchors in pixels -> normalized: (.125, .125), (.25, .25), (.375, .625), (.75, .5).
ANCHORS = [8, 8, 16, 16, 24, 40, 48, 32]


def heads(**options):
    return (make_yolo(2, 2, (2, 3), 3, ANCHORS, **options),
            make_yolo(4, 4, (0, 1), 3, ANCHORS, **options))


def entropy(t):
    return -(t * math.log(t) + (1 - t) * math.log(1 - t))


def test_assignment_and_loss_hand_worked():
    # Truth (.6, .3) size .5 x .5, class 2. Shape IoUs with the anchors centred on it:
    # a0 .015625/.25 = .0625; a1 .0625/.25 = .25; a2 (.375·.5)/(.25 + .234375 - .1875) = .632;
    # a3 (.5·.5)/(.25 + .375 - .25) = .667 -> anchor 3: head A's box n = 1, head B none.
    head_a, head_b = heads(ignore_thresh=0.4)
    truths = [np.array([[0.6, 0.3, 0.5, 0.5, 2]])]
    out_a, out_b = np.zeros((1, 2, 2, 16)), np.zeros((1, 4, 4, 16))
    ta, sa = yolo_targets(out_a, truths, head_a, 64, 64)
    tb, sb = yolo_targets(out_b, truths, head_b, 64, 64)

    # Head A: cell i = int(.6·2) = 1, j = int(.3·2) = 0.
    box = (0, 0, 1, 1)
    np.testing.assert_allclose(ta.coord[box], [0.2, 0.6, math.log(0.5 / 0.75), 0.0])
    assert ta.coord_scale[box] == pytest.approx(2 - 0.25)
    assert (ta.coord_scale > 0).sum() == 1
    assert ta.obj[box] == 1 and ta.obj.sum() == 1
    np.testing.assert_array_equal(ta.cls[box], [0, 0, 1])
    assert ta.cls_mask.sum() == 1 and ta.cls_mask[box]
    # With a zero output every box sits at its cell centre with its anchor's size. The same cell's
    # anchor-2 box (.75, .25, .375, .625) overlaps the truth by .14375/.340625 = .422 > .4: it is
    # ignored. The responsible box overlaps by .21375/.41125 = .520 (ignored too, but responsible
    # wins); every other box of A overlaps by < .25.
    expect = np.ones((1, 2, 2, 2))
    expect[0, 0, 1, 0] = 0
    np.testing.assert_array_equal(ta.obj_scale, expect)
    assert sa.count == 1 and sa.iou == pytest.approx(0.21375 / 0.41125)
    assert sa.recall == 1 and sa.obj == 0.5 and sa.cat == 0.5
    # Head B: no truth's best anchor is its own; its boxes overlap the truth by at most .25.
    assert tb.coord_scale.sum() == 0 and tb.obj.sum() == 0 and not tb.cls_mask.any()
    np.testing.assert_array_equal(tb.obj_scale, 1)
    assert sb.count == 0 and sb.cells == 32 and sb.anyobj == 16

    # Loss at σ = .5 everywhere: CE(t, .5) - H(t) = log 2 - H(t).
    loss_a, g_a = yolo_loss(out_a, ta, head_a)
    coord = (1.75 * (2 * LOG2 - entropy(0.2) - entropy(0.6))
             + 0.5 * 1.75 * math.log(0.5 / 0.75) ** 2)
    assert loss_a["coord"] == pytest.approx(coord)
    assert loss_a["obj"] == pytest.approx(LOG2)
    assert loss_a["noobj"] == pytest.approx(6 * LOG2)  # 8 boxes - responsible - ignored
    assert loss_a["cls"] == pytest.approx(3 * LOG2)
    assert loss_a["total"] == pytest.approx(coord + 10 * LOG2)
    # The gradient is minus darknet's delta: delta_x = 1.75·(.2 - .5), delta_w = 1.75·(log(2/3)
    # - 0), delta_obj = 1 - .5, delta_class = (0 - .5, 0 - .5, 1 - .5).
    g = g_a.reshape(1, 2, 2, 2, 8)[box]
    np.testing.assert_allclose(g, [0.525, -0.175, 1.75 * math.log(1.5), 0, -0.5, 0.5, 0.5, -0.5])
    g_a.reshape(1, 2, 2, 2, 8)[box] = 0
    noobj = np.zeros((1, 2, 2, 2, 8))
    noobj[..., 4] = 0.5 * expect  # σ(0) - 0 where not ignored
    noobj[box] = 0
    np.testing.assert_allclose(g_a.reshape(noobj.shape), noobj)
    loss_b, _ = yolo_loss(out_b, tb, head_b)
    assert loss_b["noobj"] == pytest.approx(32 * LOG2) and loss_b["total"] == loss_b["noobj"]


def test_two_truths_on_one_box_add_their_classes_and_the_last_box_wins():
    # Second truth (.7, .4) .5 x .45 class 0: a3 .225/.375 = .6 beats a2 .16875/.290625 = .58,
    # and it lands in the same cell (1, 0): its box targets replace the first's, its class adds.
    head_a, _ = heads()
    truths = [np.array([[0.6, 0.3, 0.5, 0.5, 2], [0.7, 0.4, 0.5, 0.45, 0]])]
    t, stats = yolo_targets(np.zeros((1, 2, 2, 16)), truths, head_a, 64, 64)
    box = (0, 0, 1, 1)
    np.testing.assert_allclose(t.coord[box], [0.4, 0.8, math.log(0.5 / 0.75), math.log(0.9)])
    assert t.coord_scale[box] == pytest.approx(2 - 0.225)
    np.testing.assert_array_equal(t.cls[box], [1, 0, 1])
    assert stats.count == 2


def test_truth_thresh_makes_an_overlapping_box_responsible():
    # truth_thresh .4: the anchor-2 box of cell (1, 0) overlaps the truth by .422 (see above), so
    # darknet's first loop gives it objectness 1, the class and the box targets with its own anchor
    # (.375, .625): tw = log(.5/.375), th = log(.5/.625).
    head_a, _ = heads(ignore_thresh=0.4, truth_thresh=0.4)
    t, _ = yolo_targets(np.zeros((1, 2, 2, 16)), [np.array([[0.6, 0.3, 0.5, 0.5, 2]])],
                        head_a, 64, 64)
    box = (0, 0, 1, 0)
    np.testing.assert_allclose(t.coord[box], [0.2, 0.6, math.log(0.5 / 0.375),
                                              math.log(0.5 / 0.625)])
    assert t.obj[box] == 1 and t.obj_scale[box] == 1 and t.coord_scale[box] == 1.75
    np.testing.assert_array_equal(t.cls[box], [0, 0, 1])
    assert t.obj.sum() == 2  # and the best-anchor box, as without truth_thresh


def test_logistic_xent_is_zero_at_the_target_and_its_derivative_is_sigma_minus_t():
    t = np.array([0.0, 0.2, 0.5, 1.0])
    z = np.array([-3.0, math.log(0.25), 0.0, 2.0])  # σ(log .25) = .2
    np.testing.assert_allclose(logistic_xent(z[1:3], t[1:3]), 0, atol=1e-15)
    assert logistic_xent(z[0], t[0]) == pytest.approx(-math.log(1 - 1 / (1 + math.exp(3))))
    assert logistic_xent(z[3], t[3]) == pytest.approx(-math.log(1 / (1 + math.exp(-2))))
    num = numeric_grad(lambda: float(logistic_xent(z, t).sum()), z)
    np.testing.assert_allclose(num, 1 / (1 + np.exp(-z)) - t, rtol=1e-8, atol=1e-9)


def test_yolo_loss_gradient():
    rng = np.random.default_rng(11)
    head = make_yolo(3, 2, (0, 1), 3, [1, 1, 2, 1.5])
    out = rng.normal(size=(2, 3, 2, 16))
    shape = (2, 3, 2, 2)
    t = YoloTargets(
        coord=np.concatenate([rng.uniform(0, 1, shape + (2,)), rng.normal(size=shape + (2,))], -1),
        coord_scale=rng.uniform(0, 2, shape), obj=rng.integers(0, 2, shape).astype(float),
        obj_scale=rng.integers(0, 2, shape).astype(float),
        cls=rng.integers(0, 2, shape + (3,)).astype(float), cls_mask=rng.uniform(size=shape) < 0.5,
    )
    _, g = yolo_loss(out, t, head)
    num = numeric_grad(lambda: yolo_loss(out, t, head)[0]["total"], out)
    assert rel_err(g, num) < RTOL


def test_route_and_upsample_forward_and_gradients():
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(2, 3, 4, 2)), rng.normal(size=(2, 3, 4, 5))
    y = L.route_forward([a, b])
    for k in range(7):  # channel order: a's, then b's
        np.testing.assert_array_equal(y[..., k], a[..., k] if k < 2 else b[..., k - 2])
    r = rng.normal(size=y.shape)
    da, db = L.route_backward(r, [2, 5])
    assert rel_err(da, numeric_grad(lambda: float((L.route_forward([a, b]) * r).sum()), a)) < RTOL
    assert rel_err(db, numeric_grad(lambda: float((L.route_forward([a, b]) * r).sum()), b)) < RTOL

    x = rng.normal(size=(2, 3, 4, 2))
    up = L.upsample_forward(x, 2)
    for n in range(2):  # darknet's upsample_cpu loops, on CHW
        np.testing.assert_array_equal(up[n].transpose(2, 0, 1),
                                      upsample_naive(x[n].transpose(2, 0, 1), 2))
    r = rng.normal(size=up.shape)
    num = numeric_grad(lambda: float((L.upsample_forward(x, 2) * r).sum()), x)
    assert rel_err(L.upsample_backward(r, 2), num) < RTOL


TRUTHS = [np.array([[0.3, 0.4, 0.2, 0.2, 1], [0.6, 0.6, 0.7, 0.6, 0]]),
          np.array([[0.4, 0.7, 0.35, 0.4, 1], [0.5, 0.4, 0.5, 0.45, 0]])]


def test_whole_two_head_network_gradient_with_targets_frozen():
    rng = np.random.default_rng(13)
    net = TrainNet(small_yolo_network(rng))
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    hs = [h for _, h in net.heads]
    targets = [yolo_targets(o, TRUTHS, h, 8, 8) for o, h in
               zip(net.forward_heads(x, train=True), hs, strict=True)]
    # Both heads are responsible for some truth (anchors 0, 1 on the 4×4 head, 2, 3 on the 2×2).
    assert [s.count for _, s in targets] == [2, 2]

    def f():
        outs = net.forward_heads(x, train=True)
        return sum(yolo_loss(o, t, h)[0]["total"]
                   for o, (t, _), h in zip(outs, targets, hs, strict=True))

    net.zero_grad()
    douts = [yolo_loss(o, t, h)[1] for o, (t, _), h in
             zip(net.forward_heads(x, train=True), targets, hs, strict=True)]
    dx = net.backward(*douts)
    assert rel_err(dx, numeric_grad(f, x)) < RTOL
    for block, name, p, _ in net.params():
        assert rel_err(block.grads[name], numeric_grad(f, p)) < RTOL, (block.index, name)


def test_train_step_sums_both_heads():
    rng = np.random.default_rng(14)
    net = TrainNet(small_yolo_network(rng))
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    net.zero_grad()
    loss, stats = net.train_step(x, TRUTHS, seen=100)
    per_head = [yolo_loss(o, yolo_targets(o, TRUTHS, h, 8, 8)[0], h)[0]["total"]
                for o, (_, h) in zip(net.forward_heads(x, train=True), net.heads, strict=True)]
    assert loss["total"] == pytest.approx(sum(per_head))
    assert stats.count == 4 and stats.cells == 2 * (2 * 2 * 2 + 4 * 4 * 2)


def test_qat_forward_matches_golden_model_on_export_with_a_shared_route_scale():
    rng = np.random.default_rng(15)
    network = small_yolo_network(rng)
    qat = QATState(warmup=2, bn_freeze=3, momentum=0.5)
    net = TrainNet(network, qat)
    for _ in range(4):  # BN statistics, ranges, then frozen
        net.zero_grad()
        net.train_step(rng.uniform(0, 1, size=(2, 8, 8, 3)), TRUTHS, seen=100)
        qat.step += 1
    qnet = export_quantized(network, qat)
    # Route 10 concatenates conv 8 (through the upsample) and conv 2: one scale, the larger range.
    shared = max(qat.ranges[2], qat.ranges[8]) / 127
    assert qnet.layers[2].out_scale == qnet.layers[8].out_scale == qnet.layers[10].scale == shared
    assert qat.ranges[2] != qat.ranges[8]
    x = rng.uniform(0, 1, size=(2, 8, 8, 3))
    ours = net.forward_all(x, train=False)
    for b in range(2):
        gold = forward_int(qnet, quantize_input(x[b].transpose(2, 0, 1)))
        for i, q in enumerate(qnet.layers):
            if q.kind == "yolo":
                continue
            mine = ours[i][b].transpose(2, 0, 1)
            if q.kind == "convolutional" and q.output_int32:
                lsb = np.max(q.output_scale)
                np.testing.assert_allclose(mine, dequantize_output(q, gold[i]), atol=lsb * 1000,
                                           rtol=0.02)
                continue
            scale = q.out_scale if q.kind == "convolutional" else q.scale
            diff = np.abs(np.rint(mine / scale) - gold[i].astype(np.int64))
            # The golden model's 16-bit multiplier can move a value across a rounding boundary.
            assert diff.max() <= 1 and (diff == 0).mean() > 0.98, i


def test_a_layer_reading_a_head_is_refused():
    network = small_yolo_network(np.random.default_rng(16))
    network.layers[7] = RouteLayer((14, 2, 2), (14, 2, 2), (6,))
    with pytest.raises(ValueError, match="layer 7: reads the output of a detection head"):
        TrainNet(Network(network.input_shape, network.layers))
