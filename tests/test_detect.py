"""Box decoding and NMS against darknet's own detections, plus hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from model.darknet import load_darknet
from model.detect import Detection, box_iou, do_nms_sort, get_network_boxes
from model.float_ref import forward
from model.image import letterbox, load_image
from model.network import RegionLayer
from model.zoo import DOG_IMAGE, REFERENCE_CFG, REFERENCE_WEIGHTS

# boxes.txt prints 7 significant digits, so agreement is checked to 1e-6 relative; zeros are exact.
RTOL = 1e-6


@pytest.fixture(scope="module")
def ref(darknet_tiny96):
    return darknet_tiny96


def as_rows(dets: list[Detection]) -> np.ndarray:
    return np.array([[d.x, d.y, d.w, d.h, d.objectness, *d.probs] for d in dets])


def darknet_boxes(ref) -> np.ndarray:
    """boxes.txt: one line per detection, ``x y w h objectness prob[0..2]``, darknet's order."""
    rows = np.loadtxt(ref / "boxes.txt", comments="#", ndmin=2)
    assert rows.shape == (45, 8)  # 3x3 cells x 5 anchors: darknet keeps every candidate
    return rows


def test_region_output_decodes_to_darknets_boxes(ref):
    net = load_darknet(REFERENCE_CFG, REFERENCE_WEIGHTS)
    region_out = np.fromfile(ref / "layer14.f32", dtype="<f4").reshape(net.region.out_shape)
    dets = get_network_boxes(region_out, net.region, 96, 96, 768, 576, thresh=0.2)
    assert len(dets) == 45
    assert do_nms_sort(dets, 3, 0.45) is dets
    np.testing.assert_allclose(as_rows(dets), darknet_boxes(ref), rtol=RTOL, atol=0)


def test_image_to_boxes_end_to_end(ref):
    """dog.png -> letterbox -> float reference -> boxes -> NMS equals darknet's detections."""
    net = load_darknet(REFERENCE_CFG, REFERENCE_WEIGHTS)
    image = load_image(DOG_IMAGE)
    _, img_h, img_w = image.shape
    outputs = forward(net, letterbox(image, 96, 96))
    dets = get_network_boxes(outputs[-1], net.region, 96, 96, img_w, img_h, thresh=0.2)
    do_nms_sort(dets, net.region.classes)
    np.testing.assert_allclose(as_rows(dets), darknet_boxes(ref), rtol=RTOL, atol=0)


def _one_cell_region(num: int = 1, classes: int = 2) -> RegionLayer:
    shape = (num * (5 + classes), 1, 1)
    anchors = np.tile(np.float32([2.0, 4.0]), (num, 1))
    return RegionLayer(shape, shape, anchors, classes, 4, num, True)


@pytest.mark.parametrize(("img_w", "img_h"), [(200, 100), (100, 200), (96, 96)])
def test_letterbox_correction_maps_the_image_area_to_unit_box(img_w, img_h):
    """A box covering exactly the letterboxed image area decodes to (0.5, 0.5, 1, 1)."""
    net_w = net_h = 96
    # image area inside the 96x96 input (letterbox_image): e.g. 200x100 -> 96x48
    new_w = net_w if img_w >= img_h else img_w * net_h // img_h
    new_h = net_h if img_h >= img_w else img_h * net_w // img_w
    layer = _one_cell_region()
    out = np.zeros(layer.in_shape, np.float32)
    out[0:2] = 0.5  # centre of the single cell
    out[2] = np.log(new_w / net_w / 2.0)  # exp(tw) * anchor_w(2) / 1 = new_w / net_w
    out[3] = np.log(new_h / net_h / 4.0)
    out[4] = 0.9
    out[5:7] = [[[0.25]], [[0.75]]]
    (det,) = get_network_boxes(out, layer, net_w, net_h, img_w, img_h, thresh=0.3)
    np.testing.assert_allclose([det.x, det.y, det.w, det.h], [0.5, 0.5, 1, 1], rtol=1e-6)
    assert det.objectness == np.float32(0.9)
    # scores are objectness * class probability, zeroed at or below the threshold
    np.testing.assert_array_equal(det.probs, [0, np.float32(0.9) * np.float32(0.75)])
    (pix,) = get_network_boxes(out, layer, net_w, net_h, img_w, img_h, 0.3, relative=False)
    np.testing.assert_allclose([pix.x, pix.w, pix.y, pix.h], [img_w / 2, img_w, img_h / 2, img_h])


def test_low_objectness_zeroes_everything():
    layer = _one_cell_region()
    out = np.zeros(layer.in_shape, np.float32)
    out[4] = 0.1
    out[5:7] = 0.5
    (det,) = get_network_boxes(out, layer, 32, 32, 32, 32, thresh=0.2)
    assert det.objectness == 0 and not det.probs.any()


def test_detection_order_is_anchor_major():
    """Detection n*H*W + row*W + col is anchor n of cell (row, col), as darknet indexes it."""
    num, classes, grid_h, grid_w = 2, 1, 2, 3
    shape = (num * (5 + classes), grid_h, grid_w)
    layer = RegionLayer(shape, shape, np.ones((num, 2), np.float32), classes, 4, num, True)
    out = np.zeros(shape, np.float32).reshape(num, 6, grid_h, grid_w)
    out[:, 4] = np.arange(num * grid_h * grid_w).reshape(num, grid_h, grid_w) / 100 + 0.5
    dets = get_network_boxes(out.reshape(shape), layer, 30, 20, 30, 20, thresh=0.1)
    np.testing.assert_allclose([d.objectness for d in dets], np.arange(12) / 100 + 0.5, rtol=1e-6)
    # x of cell column c is (c + 0) / 3, y of row r is r / 2
    np.testing.assert_allclose([d.x for d in dets[:3]], [0, 1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose([d.y for d in dets[:6]], [0, 0, 0, 0.5, 0.5, 0.5])


def det(x, y, w, h, obj, *probs) -> Detection:
    return Detection(x, y, w, h, obj, np.array(probs, np.float32))


def test_nms_zero_objectness_swap_order():
    """Darknet swaps each zero-objectness entry with the current last one, not a stable partition.

    Worked by hand from src/box.c: objectness [0, a, 0, b, c] -> swap 0<->4: [c, a, 0, b, 0];
    then 2<->3: [c, a, b, 0, 0]. The single class then sorts the first three by score.
    """
    dets = [
        det(0.1, 0.1, 0.01, 0.01, 0.0, 0.0),  # 0
        det(0.3, 0.3, 0.01, 0.01, 0.6, 0.5),  # a
        det(0.5, 0.5, 0.01, 0.01, 0.0, 0.0),  # 2
        det(0.7, 0.7, 0.01, 0.01, 0.7, 0.5),  # b
        det(0.9, 0.9, 0.01, 0.01, 0.8, 0.6),  # c
    ]
    names = {id(d): n for d, n in zip(dets, ["z0", "a", "z2", "b", "c"], strict=True)}
    do_nms_sort(dets, classes=1)
    # c (0.6) first; a and b tie at 0.5 and keep their order after the swap (a before b)
    assert [names[id(d)] for d in dets] == ["c", "a", "b", "z2", "z0"]


def test_nms_suppresses_overlaps_per_class():
    big = det(0.5, 0.5, 0.4, 0.4, 0.9, 0.8, 0.1)
    near = det(0.52, 0.5, 0.4, 0.4, 0.9, 0.7, 0.6)  # IoU with big ~0.9
    far = det(0.1, 0.1, 0.1, 0.1, 0.9, 0.5, 0.0)
    dets = do_nms_sort([far, near, big], classes=2, nms=0.45)
    assert dets[0] is near  # last class sorted: near (0.6) > big (0.1) > far (0)
    np.testing.assert_array_equal(big.probs, np.float32([0.8, 0]))  # class 1 lost to near
    np.testing.assert_array_equal(near.probs, np.float32([0, 0.6]))  # class 0 lost to big
    np.testing.assert_array_equal(far.probs, np.float32([0.5, 0]))


def test_box_iou_hand_values():
    a = np.float32([0.5, 0.5, 1.0, 1.0])
    b = np.float32([[0.5, 0.5, 1.0, 1.0], [1.0, 0.5, 1.0, 1.0], [3.0, 3.0, 1.0, 1.0],
                    [0.5, 0.5, 0.5, 0.5]])  # fmt: skip
    np.testing.assert_allclose(box_iou(a, b), [1.0, 0.5 / 1.5, 0.0, 0.25], rtol=1e-6)
