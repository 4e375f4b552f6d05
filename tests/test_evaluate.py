"""The evaluator against cases whose AP is worked out by hand (in the comments).

Boxes are chosen with dyadic coordinates so every IoU is exact in binary floating point.
"""

import numpy as np
import pytest

from model.evaluate import average_precision, coco_map, evaluate_detections, plot_pr_curves


def box(x0, x1, y0=0.0, y1=1.0):
    """Centre/size box from corners."""
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


def det(b, score, cls=0):
    return b + [score, cls]


def gt(b, cls=0):
    return b + [cls]


G1, G2, G3 = box(0.0, 0.25), box(0.5, 0.75), box(0.25, 0.5)
FAR = box(0.875, 1.0)


def five_detections():
    """3 truths in 2 images; by score: G1 (TP), miss (FP), G1 again (FP), G3 (TP), G2 (TP).

    Cumulative TP 1,1,1,2,3 and FP 0,1,2,2,2 over npos = 3:
      recall    1/3, 1/3, 1/3, 2/3, 1
      precision 1,   1/2, 1/3, 1/2, 3/5
    Envelope: 1, .6, .6, .6, .6.
    All-point AP = 1/3·1 + 1/3·.6 + 1/3·.6 = 0.7333...
    11-point: t = 0, .1, .2, .3 -> 1 (4 points); t = .4 ... 1.0 -> .6 (7 points):
      AP = (4 + 7·.6)/11 = 8.2/11.
    """
    gts = [np.array([gt(G1), gt(G2)]), np.array([gt(G3)])]
    dets = [
        np.array([det(G1, 0.9), det(FAR, 0.8), det(G1, 0.7), det(G2, 0.5)]),
        np.array([det(G3, 0.6)]),
    ]
    return dets, gts


def test_voc_all_point_and_11_point_hand_worked():
    dets, gts = five_detections()
    r = evaluate_detections(dets, gts, num_classes=1, coco=False)
    c = r.classes[0]
    assert c.npos == 3
    np.testing.assert_allclose(c.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 1 / 3, 1 / 2, 3 / 5])
    assert c.ap_all == pytest.approx(1 / 3 + 0.2 + 0.2)
    assert c.ap_11 == pytest.approx(8.2 / 11)
    assert r.map_all == pytest.approx(c.ap_all)


def test_difficult_truth_is_neither_positive_nor_false_positive():
    dets, gts = five_detections()
    # A difficult truth in image 1 with a top-scoring exact detection: ignored entirely.
    g4 = box(0.625, 0.875, 0.0, 0.5)
    gts[1] = np.array([gt(G3), gt(g4)])
    dets[1] = np.array([det(G3, 0.6), det(g4, 0.95)])
    diff = [np.zeros(2, bool), np.array([False, True])]
    r = evaluate_detections(dets, gts, 1, difficult=diff, coco=False)
    assert r.classes[0].npos == 3
    assert r.classes[0].ap_all == pytest.approx(1 / 3 + 0.2 + 0.2)
    # Not difficult: 4 positives, the extra detection is a TP ranked first:
    # TP 1,2,2,2,3,4 / FP 0,0,1,2,2,2 -> recall .25,.5,.5,.5,.75,1; precision 1,1,2/3,1/2,3/5,2/3;
    # envelope 1,1,2/3,2/3,2/3,2/3 -> AP = .25 + .25 + .25·2/3 + .25·2/3 = 0.8333...
    r = evaluate_detections(dets, gts, 1, coco=False)
    assert r.classes[0].npos == 4
    assert r.classes[0].ap_all == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc_threshold_is_strict_and_coco_inclusive():
    # Truth [.25,.75]x[.375,.625] (area .125); detection [.25,.5]x[.375,.625] (area .0625) inside
    # it: IoU = .0625/.125 = 0.5 exactly. VOC needs IoU > .5: a false positive, AP 0.
    # COCO needs IoU >= t: a TP at t = .5 only (AP 1), a FP at the 9 other thresholds (AP 0).
    g = box(0.25, 0.75, 0.375, 0.625)
    d = box(0.25, 0.5, 0.375, 0.625)
    r = evaluate_detections([np.array([det(d, 0.9)])], [np.array([gt(g)])], 1)
    assert r.classes[0].ap_all == 0 and r.classes[0].ap_11 == 0
    assert r.coco_map == pytest.approx(0.1)


def test_coco_iou_range():
    # Truth [.25,.75]^2, detection [.25,.75]x[.25,.61]: IoU = .5·.36/.25 = .72 -> TP at
    # t = .50, .55, .60, .65, .70 (AP 1), FP at .75 ... .95 (AP 0): mAP = 0.5.
    g = box(0.25, 0.75, 0.25, 0.75)
    d = box(0.25, 0.75, 0.25, 0.61)
    assert coco_map([np.array([det(d, 0.5)])], [np.array([gt(g)])], 1) == pytest.approx(0.5)


def test_coco_101_point_interpolation():
    # Two truths; detections TP (.9), FP (.8), TP (.7) at every threshold (exact boxes).
    # recall .5, .5, 1; precision 1, .5, 2/3; envelope 1, 2/3, 2/3. Recall points 0..0.50 (51)
    # take precision 1, points .51..1 (50) take 2/3: AP = (51 + 50·2/3)/101.
    gts = [np.array([gt(G1), gt(G2)])]
    dets = [np.array([det(G1, 0.9), det(FAR, 0.8), det(G2, 0.7)])]
    assert coco_map(dets, gts, 1) == pytest.approx((51 + 100 / 3) / 101)


def test_voc_and_coco_matching_differ_on_a_taken_truth():
    # G1 = [0, .5], G2 = [.25, .75] (full height). d1 = G1 exactly (.9). d2 = [.125, .609375] (.8):
    # IoU with G1 = .375/.609375 = .615, with G2 = .359375/.625 = .575.
    # VOC: d2's best truth G1 is taken -> FP: recall .5,.5, precision 1,.5 -> AP = .5.
    # COCO: d2 takes the free G2 while .575 >= t (t = .50, .55: AP 1); at t >= .60 it is a FP:
    # envelope 1, .5 over recall .5, .5 -> 51 of 101 points at 1, the rest 0 (recall 1 never
    # reached). mAP = (2 + 8·51/101)/10.
    g1, g2 = box(0.0, 0.5), box(0.25, 0.75)
    gts = [np.array([gt(g1), gt(g2)])]
    dets = [np.array([det(g1, 0.9), det(box(0.125, 0.609375), 0.8)])]
    r = evaluate_detections(dets, gts, 1)
    assert r.classes[0].ap_all == pytest.approx(0.5)
    assert r.coco_map == pytest.approx((2 + 8 * 51 / 101) / 10)


def test_classes_without_truth_are_left_out_and_classes_do_not_mix():
    # Class 1 has a truth and a perfect detection; class 0 only a false positive and no truth;
    # class 2 has a truth detected with the wrong class. mAP over classes 1 and 2 = (1 + 0)/2.
    gts = [np.array([gt(G1, 1), gt(G2, 2)])]
    dets = [np.array([det(G1, 0.9, 1), det(FAR, 0.8, 0), det(G2, 0.7, 1)])]
    r = evaluate_detections(dets, gts, 3)
    assert np.isnan(r.classes[0].ap_all)
    assert r.classes[1].ap_all == 1 and r.classes[2].ap_all == 0
    assert r.map_all == pytest.approx(0.5)


def test_average_precision_methods_on_perfect_and_empty_curves():
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), "all") == 1
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), "11point") == 1
    assert average_precision(np.array([]), np.array([]), "all") == 0
    with pytest.raises(ValueError):
        average_precision(np.array([1.0]), np.array([1.0]), "bogus")


def test_pr_curve_png(tmp_path):
    dets, gts = five_detections()
    r = evaluate_detections(dets, gts, 1, names=["shape"])
    plot_pr_curves(r, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "shape" in r.summary()
