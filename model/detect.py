"""Region and yolo box decoding and non-maximum suppression, exactly as darknet does them.

Every step keeps darknet's float/double types (box fields are float32; ``exp`` and the letterbox
correction's offsets are double) and darknet's orders, so the boxes, scores and output order equal
darknet's ``get_network_boxes`` + ``do_nms_sort``.
Ref: pjreddie darknet src/region_layer.c, src/yolo_layer.c, src/box.c, src/network.c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.network import RegionLayer, YoloLayer

__all__ = [
    "Detection",
    "box_iou",
    "do_nms_sort",
    "get_network_boxes",
    "get_yolo_detections",
    "nms_sort",
]

_F32 = np.float32
_F64 = np.float64


@dataclass
class Detection:
    """One candidate box (darknet's ``detection``).

    Attributes
    ----------
    x, y : float
        Box centre, relative to the original image (0..1 inside it; may fall outside).
    w, h : float
        Box size, same units. All four are float32 values (darknet's ``box``).
    objectness : float
        The objectness if above the threshold, else 0.
    probs : float32 array, shape (classes,)
        ``objectness * P(class)`` if above the threshold, else 0; zeroed further by NMS.
    """

    x: float
    y: float
    w: float
    h: float
    objectness: float
    probs: np.ndarray


def _letterbox_size(img_w: int, img_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """Size of the image inside the letterboxed network input (as ``letterbox_image``)."""
    if _F32(net_w) / _F32(img_w) < _F32(net_h) / _F32(img_h):
        return net_w, (img_h * net_w) // img_w
    return (img_w * net_h) // img_h, net_h


def get_network_boxes(
    region_output: np.ndarray,
    layer: RegionLayer,
    net_w: int,
    net_h: int,
    img_w: int,
    img_h: int,
    thresh: float,
    relative: bool = True,
) -> list[Detection]:
    """Decode every anchor of every cell into a :class:`Detection`, as darknet does.

    Darknet's ``get_network_boxes(net, img_w, img_h, thresh, hier=0.5, map=0, relative)`` for a
    network whose only output is a region layer: ``get_region_detections`` then
    ``correct_region_boxes`` (undoing the letterbox).

    Parameters
    ----------
    region_output : float32 array, shape (num * (coords + 1 + classes), H, W)
        The region layer's output (after :func:`model.float_ref.region_forward`).
    layer : RegionLayer
    net_w, net_h : int
        Network input size.
    img_w, img_h : int
        Original image size.
    thresh : float
        Objectness and class-score threshold (darknet compares in float32).
    relative : bool
        True: coordinates relative to the image; False: in pixels.

    Returns
    -------
    list of Detection, length ``num * H * W``
        Detection ``n * H * W + row * W + col`` is anchor ``n`` of cell ``(row, col)`` -- darknet's
        order. Ref: darknet src/region_layer.c ``get_region_detections``, ``get_region_box``,
        ``correct_region_boxes``.
    """
    entries = layer.coords + 1 + layer.classes
    pred = np.asarray(region_output, _F32)
    _, grid_h, grid_w = pred.shape
    pred = pred.reshape(layer.num, entries, grid_h, grid_w)
    anchors = np.asarray(layer.anchors, _F32).astype(_F64)
    col = np.arange(grid_w, dtype=_F32)[None, None, :]
    row = np.arange(grid_h, dtype=_F32)[None, :, None]
    # get_region_box: x, y in float; w, h via double exp() times the float anchor, over int w.
    bx = (col + pred[:, 0]) / _F32(grid_w)
    by = (row + pred[:, 1]) / _F32(grid_h)
    bw = (np.exp(pred[:, 2].astype(_F64)) * anchors[:, 0, None, None] / grid_w).astype(_F32)
    bh = (np.exp(pred[:, 3].astype(_F64)) * anchors[:, 1, None, None] / grid_h).astype(_F32)

    scale = pred[:, layer.coords]
    thresh32 = _F32(thresh)
    objectness = np.where(scale > thresh32, scale, _F32(0))
    probs = scale[:, None] * pred[:, layer.coords + 1 :]  # float * float
    probs = np.where((probs > thresh32) & (objectness[:, None] != 0), probs, _F32(0))

    boxes = _correct_boxes(bx, by, bw, bh, net_w, net_h, img_w, img_h, relative)
    probs = probs.transpose(0, 2, 3, 1).reshape(-1, layer.classes)
    return _detection_list(*(a.ravel() for a in (*boxes, objectness)), probs)


def _correct_boxes(bx, by, bw, bh, net_w, net_h, img_w, img_h, relative):
    """Undo the letterbox on float32 box arrays (any one shape); returns the four arrays.

    The offsets and the division are double, the w/h factor float. Ref: darknet
    src/region_layer.c ``correct_region_boxes``, src/yolo_layer.c ``correct_yolo_boxes`` (the
    same arithmetic).
    """
    new_w, new_h = _letterbox_size(img_w, img_h, net_w, net_h)
    off_x, off_y = (net_w - new_w) / 2.0 / net_w, (net_h - new_h) / 2.0 / net_h
    bx = ((bx.astype(_F64) - off_x) / _F64(_F32(new_w) / _F32(net_w))).astype(_F32)
    by = ((by.astype(_F64) - off_y) / _F64(_F32(new_h) / _F32(net_h))).astype(_F32)
    bw = bw * (_F32(net_w) / _F32(new_w))
    bh = bh * (_F32(net_h) / _F32(new_h))
    if not relative:
        bx, bw = bx * _F32(img_w), bw * _F32(img_w)
        by, bh = by * _F32(img_h), bh * _F32(img_h)
    return bx, by, bw, bh


def _detection_list(bx, by, bw, bh, objectness, probs) -> list[Detection]:
    """One :class:`Detection` per entry of the flat (N,) arrays and the (N, classes) ``probs``."""
    return [
        Detection(float(x), float(y), float(w), float(h), float(o), probs[i].copy())
        for i, (x, y, w, h, o) in enumerate(zip(bx, by, bw, bh, objectness, strict=True))
    ]


def get_yolo_detections(
    yolo_output: np.ndarray,
    layer: YoloLayer,
    net_w: int,
    net_h: int,
    img_w: int,
    img_h: int,
    thresh: float,
    relative: bool = True,
) -> list[Detection]:
    """The boxes of one yolo layer whose objectness exceeds ``thresh``, as darknet decodes them.

    Parameters
    ----------
    yolo_output : float32 array, shape (len(mask) * (4 + 1 + classes), H, W)
        The yolo layer's output (after :func:`model.float_ref.yolo_forward`).
    layer : YoloLayer
    net_w, net_h : int
        Network input size (the anchors are in its pixels).
    img_w, img_h : int
        Original image size.
    thresh : float
        Objectness and class-score threshold (darknet compares in float32).
    relative : bool
        True: coordinates relative to the image; False: in pixels.

    Returns
    -------
    list of Detection
        Cell by cell (row-major), and within a cell box ``n`` of the mask in order, only those with
        objectness above ``thresh`` -- darknet's order. A class probability is
        ``objectness * P(class)`` if above ``thresh``, else 0.
        Ref: darknet src/yolo_layer.c ``get_yolo_detections``, ``get_yolo_box``,
        ``correct_yolo_boxes``.
    """
    entries = 4 + 1 + layer.classes
    pred = np.asarray(yolo_output, _F32)
    _, grid_h, grid_w = pred.shape
    # (cells, boxes, entries): darknet loops over cells outside, boxes inside.
    pred = pred.reshape(len(layer.mask), entries, grid_h * grid_w).transpose(2, 0, 1)
    objectness = pred[:, :, 4]
    cell, box = np.nonzero(objectness > _F32(thresh))
    pred, objectness = pred[cell, box], objectness[cell, box]
    anchors = np.asarray(layer.anchors, _F32)[list(layer.mask)][box].astype(_F64)
    # get_yolo_box: x, y in float over the int grid size; w, h via double exp() times the float
    # anchor over the int network size.
    bx = ((cell % grid_w).astype(_F32) + pred[:, 0]) / _F32(grid_w)
    by = ((cell // grid_w).astype(_F32) + pred[:, 1]) / _F32(grid_h)
    bw = (np.exp(pred[:, 2].astype(_F64)) * anchors[:, 0] / net_w).astype(_F32)
    bh = (np.exp(pred[:, 3].astype(_F64)) * anchors[:, 1] / net_h).astype(_F32)
    probs = objectness[:, None] * pred[:, 5:]  # float * float
    probs = np.where(probs > _F32(thresh), probs, _F32(0))
    boxes = _correct_boxes(bx, by, bw, bh, net_w, net_h, img_w, img_h, relative)
    return _detection_list(*boxes, objectness, probs)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's IoU of centre/size boxes, broadcast over boxes, in the inputs' precision.

    Parameters
    ----------
    a, b : float arrays, shapes (..., 4) that broadcast together
        ``(x, y, w, h)`` centre and size; e.g. ``a`` (4,) against ``b`` (N, 4), or
        ``boxes[:, None]`` against ``boxes[None]`` for the (N, N) matrix. float32 inputs give
        darknet's float32 results bit for bit; the trainer passes float64.

    Returns
    -------
    array, the broadcast shape without the last axis
        ``intersection / (a.w*a.h + b.w*b.h - intersection)``, with the intersection 0 when the
        boxes do not overlap on either axis, and 0 for an empty union (two empty boxes).
        Ref: darknet src/box.c ``overlap``, ``box_intersection``, ``box_union``, ``box_iou``.
    """
    a = np.asarray(a)
    b = np.asarray(b)

    def overlap(x1, w1, x2, w2):
        l1, l2 = x1 - w1 / 2, x2 - w2 / 2
        r1, r2 = x1 + w1 / 2, x2 + w2 / 2
        return np.where(r1 < r2, r1, r2) - np.where(l1 > l2, l1, l2)

    ow = overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2])
    oh = overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
    inter = np.where((ow < 0) | (oh < 0), 0, ow * oh).astype(ow.dtype)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(union.dtype)


def nms_sort(
    boxes: np.ndarray, scores: np.ndarray, nms: float, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The per-class suppression of darknet's ``do_nms_sort``, on arrays.

    For each class ``k`` in turn, the boxes taking part are sorted by ``scores[:, k]``
    descending -- with a stable sort, as glibc's ``qsort`` (a merge sort) is for these sizes --
    then every box with a non-zero score zeroes ``scores[:, k]`` of each later box whose IoU with
    it exceeds ``nms``.

    Parameters
    ----------
    boxes : float32 array, shape (N, 4)
    scores : float32 array, shape (N, classes)
    nms : float
        IoU threshold (compared in float32).
    order : int array, shape (M,), optional
        The boxes taking part, in their current order (default: all, in index order).

    Returns
    -------
    order : int array, shape (M,)
        The boxes taking part, in the order of the last class's sort (darknet's output order).
    scores : float32 array, shape (N, classes)
        A copy of ``scores`` with suppressed entries zeroed.
        Ref: darknet src/box.c ``do_nms_sort``, ``nms_comparator``.
    """
    boxes = np.asarray(boxes, _F32).reshape(-1, 4)
    scores = np.array(scores, _F32).reshape(len(boxes), -1)
    order = np.arange(len(boxes)) if order is None else np.asarray(order, np.intp)
    iou = box_iou(boxes[:, None, :], boxes[None, :, :])
    thresh = _F32(nms)
    for cls in range(scores.shape[1]):
        order = order[np.argsort(-scores[order, cls], kind="stable")]
        for pos, a in enumerate(order):
            if scores[a, cls] == 0:
                continue  # suppressed above: later boxes may still hold scores
            rest = order[pos + 1 :]
            scores[rest[iou[a, rest] > thresh], cls] = 0
    return order, scores


def do_nms_sort(dets: list[Detection], classes: int, nms: float = 0.45) -> list[Detection]:
    """Darknet's ``do_nms_sort``, in place: reorder ``dets`` and zero suppressed class scores.

    1. Detections with zero objectness are swapped to the end with darknet's exact swap loop (so
       the order of the others changes too) and take no further part.
    2. :func:`nms_sort` on the others.

    Parameters
    ----------
    dets : list of Detection
        Reordered in place; their ``probs`` arrays are modified in place.
    classes : int
    nms : float
        IoU threshold (compared in float32).

    Returns
    -------
    list of Detection
        ``dets`` itself, in darknet's output order.
        Ref: darknet src/box.c ``do_nms_sort``.
    """
    boxes = np.array([(d.x, d.y, d.w, d.h) for d in dets], _F32).reshape(-1, 4)
    scores = np.array([d.probs for d in dets], _F32).reshape(len(dets), classes)
    order = list(range(len(dets)))
    k = len(dets) - 1
    i = 0
    while i <= k:
        if dets[order[i]].objectness == 0:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    active, scores = nms_sort(boxes, scores, nms, np.array(order[:total], np.intp))
    for idx, det in enumerate(dets):
        det.probs[...] = scores[idx]
    dets[:] = [dets[idx] for idx in [*active, *order[total:]]]
    return dets
