"""YOLOv2 region loss, as darknet computes it, with an exact gradient.

Ref: darknet src/region_layer.c ``forward_region_layer``, ``delta_region_box``,
``delta_region_class``, ``backward_region_layer_gpu``.

Darknet computes the loss in two steps, and so do we:

1. :func:`region_targets` decides, from the current prediction and the ground truth, which
   output entries are pulled towards which target with which weight: best-anchor assignment
   by shape-only IoU (``bias_match``), coordinate scale ``coord_scale·(2 - w·h)``, the rescore
   objectness target (the IoU of the predicted box with its truth), the no-object term with
   the ``thresh`` ignore rule, and the prior-matching term (scale 0.01) while
   ``seen < 12800``. Entries written twice keep the **last** write, as darknet's ``delta`` array
   does. These choices are piecewise constant in the prediction, except the rescore target, which
   darknet treats as a constant too (the IoU is not differentiated): targets are stop-gradient.
2. :func:`region_loss` is a smooth function of the raw network output given the targets::

       L = Σ ½·s_xy ·(t - σ(x))²       for box x, y        (logistic)
         + Σ ½·s_wh ·(t - x)²          for box w, h        (linear, log-space target)
         + Σ ½·s_obj·(t - σ(x))²       for objectness      (logistic)
         + Σ  s_cls ·(-log softmax(x)[c])   for classes

   whose gradient is exactly ``-delta`` of darknet's GPU path: darknet's ``delta`` is
   ``scale·(target - output)`` on the activated output, and ``backward_region_layer_gpu`` then
   multiplies x, y and objectness by the logistic gradient. We follow that **GPU path**: in the CPU
   path (pjreddie/darknet) ``backward_region_layer`` is commented out and the logistic gradient is
   never applied, so the CPU build does not train a region layer. Darknet *reports*
   ``cost = Σ delta²``, which is not the function it descends; we report ``L`` above, the
   function whose gradient we follow.

Layout: the raw output of the last convolution is NHWC, ``(B, H, W, num·(coords+1+classes))``,
with channel ``n·(coords+1+classes) + k`` for anchor ``n`` and entry ``k`` (x, y, w, h, obj,
class 0..) — darknet's per-anchor channel order.

Truth boxes are darknet's ``(x, y, w, h)`` centre/size, normalized to [0, 1], plus a class id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.detect import box_iou
from model.network import RegionLayer

__all__ = [
    "RegionStats",
    "RegionTargets",
    "activate",
    "best_anchor",
    "box_target",
    "logistic",
    "pred_boxes",
    "region_activate",
    "region_loss",
    "region_targets",
    "split_entries",
    "truth_cell",
]

#: Darknet trains the "prior matching" term only for the first 12800 images.
PRIOR_SEEN = 12800
#: Scale of the prior-matching term. Ref: darknet src/region_layer.c (``.01``).
PRIOR_SCALE = 0.01


def logistic(x: np.ndarray) -> np.ndarray:
    """The logistic function, any shape."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|, exactly the logistic


def split_entries(out: np.ndarray, num: int, classes: int) -> np.ndarray:
    """(B, H, W, num·(5+classes)) -> (B, H, W, num, 5+classes) view: a head's boxes and entries.

    Region and yolo heads share darknet's per-box channel order x, y, w, h, objectness, classes
    (coords is 4 for both).
    """
    b, h, w, _ = out.shape
    return out.reshape(b, h, w, num, 5 + classes)


def activate(r: np.ndarray, softmax: bool) -> np.ndarray:
    """A head's inference activations: logistic x, y, objectness; softmax or logistic classes.

    Ref: darknet src/region_layer.c ``forward_region_layer`` (softmax classes, YOLOv2),
    src/yolo_layer.c ``forward_yolo_layer`` (independent logistic classes, YOLOv3).

    Parameters
    ----------
    r : array, shape (B, H, W, num, 5+classes)
        Raw entries (:func:`split_entries`).
    softmax : bool

    Returns
    -------
    act : array, same shape
        w, h stay raw.
    """
    act = r.copy()
    act[..., 0:2] = logistic(r[..., 0:2])
    act[..., 4] = logistic(r[..., 4])
    cls = r[..., 5:]
    if softmax:
        e = np.exp(cls - cls.max(axis=-1, keepdims=True))
        act[..., 5:] = e / e.sum(axis=-1, keepdims=True)
    else:
        act[..., 5:] = logistic(cls)
    return act


def region_activate(out: np.ndarray, region: RegionLayer) -> np.ndarray:
    """The region layer's inference output: logistic x, y, objectness; softmax classes.

    Parameters
    ----------
    out : array, shape (B, H, W, num·(coords+1+classes))
        Raw output of the last convolution.

    Returns
    -------
    act : array, shape (B, H, W, num, coords+1+classes)
    """
    return activate(split_entries(out, region.num, region.classes), region.softmax)


def pred_boxes(act: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Predicted boxes of every cell and box, normalized centre/size.

    Ref: darknet src/region_layer.c ``get_region_box`` (anchors in grid cells, divided by the
    grid size), src/yolo_layer.c ``get_yolo_box`` (anchors in input pixels, divided by the
    network size): both are ``anchors`` below once normalized.

    Parameters
    ----------
    act : array, shape (B, H, W, num, 5+classes)
        Activated entries (:func:`activate`).
    anchors : array, shape (num, 2)
        Anchor width and height, normalized to the input (0..1).

    Returns
    -------
    boxes : array, shape (B, H, W, num, 4)
        ``((i + σx)/W, (j + σy)/H, e^w·anchor_w, e^h·anchor_h)``.
    """
    _, h, w, _, _ = act.shape
    jj, ii = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    bx = (ii[None, :, :, None] + act[..., 0]) / w
    by = (jj[None, :, :, None] + act[..., 1]) / h
    bw = np.exp(act[..., 2]) * anchors[:, 0]
    bh = np.exp(act[..., 3]) * anchors[:, 1]
    return np.stack([bx, by, bw, bh], axis=-1)


def truth_cell(x: float, y: float, w: int, h: int) -> tuple[int, int]:
    """The cell ``(i, j)`` (column, row) of a ``w × h`` grid holding a truth centre.

    Darknet computes ``i = (int)(truth.x · w)``, out of range for ``truth.x == 1``; we clamp.
    """
    return min(int(x * w), w - 1), min(int(y * h), h - 1)


def best_anchor(shapes: np.ndarray, tw: float, th: float) -> int:
    """The box shape that best overlaps a truth's when both are centred at the origin.

    Ref: darknet src/region_layer.c and src/yolo_layer.c ``forward_*_layer`` (``truth_shift``).

    Parameters
    ----------
    shapes : array, shape (N, 2)
        Candidate widths and heights, normalized.
    tw, th : float
        The truth's width and height, normalized.

    Returns
    -------
    int
        The index of the largest IoU; the first on ties and 0 when none overlaps, as darknet's
        strict ``>`` from ``best_iou = 0``.
    """
    centred = np.concatenate([np.zeros_like(shapes), shapes], axis=-1)
    return int(np.argmax(box_iou(centred, np.array([0.0, 0.0, tw, th]))))


def box_target(truth: np.ndarray, i: int, j: int, w: int, h: int,
               anchor: np.ndarray) -> tuple[float, float, float, float]:
    """The coordinate targets of cell ``(i, j)`` of a ``w × h`` grid for a truth box.

    Ref: darknet src/region_layer.c ``delta_region_box``, src/yolo_layer.c ``delta_yolo_box``
    (the same targets once the anchor is normalized).

    Parameters
    ----------
    truth : array, shape (4,)
        ``(x, y, w, h)``, normalized.
    anchor : array, shape (2,)
        The box's anchor width and height, normalized.

    Returns
    -------
    (tx, ty, tw, th)
        Targets of σ(x), σ(y) (the centre's offset in the cell) and of the raw w, h (the log of
        the truth's size over the anchor's).
    """
    x, y, bw, bh = truth
    return x * w - i, y * h - j, float(np.log(bw / anchor[0])), float(np.log(bh / anchor[1]))


@dataclass
class RegionTargets:
    """Targets and weights of the region loss (all stop-gradient).

    Attributes
    ----------
    coord : array, shape (B, H, W, num, 4)
        Targets for σ(x), σ(y) (cell offsets) and raw w, h (``log(truth·grid/anchor)``).
    coord_scale : array, shape (B, H, W, num)
        Weight of the coordinate terms (0 where none).
    obj : array, shape (B, H, W, num)
        Objectness target for σ(obj).
    obj_scale : array, shape (B, H, W, num)
    cls : int array, shape (B, H, W, num)
        Class target (-1 where none).
    cls_scale : array, shape (B, H, W, num)
    """

    coord: np.ndarray
    coord_scale: np.ndarray
    obj: np.ndarray
    obj_scale: np.ndarray
    cls: np.ndarray
    cls_scale: np.ndarray


@dataclass
class RegionStats:
    """What darknet prints after a region layer (``Region Avg IOU: ...``), summed over a batch.

    ``avg_*`` properties divide by the right counts; ``count`` is the number of truth boxes.
    """

    iou: float = 0.0
    recall: float = 0.0
    obj: float = 0.0
    cat: float = 0.0
    anyobj: float = 0.0
    count: int = 0
    cells: int = 0

    def __iadd__(self, other: RegionStats) -> RegionStats:
        for k in ("iou", "recall", "obj", "cat", "anyobj", "count", "cells"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    @property
    def avg_iou(self) -> float:
        return self.iou / max(self.count, 1)

    @property
    def avg_recall(self) -> float:
        return self.recall / max(self.count, 1)

    @property
    def avg_obj(self) -> float:
        return self.obj / max(self.count, 1)

    @property
    def avg_cat(self) -> float:
        return self.cat / max(self.count, 1)

    @property
    def avg_anyobj(self) -> float:
        return self.anyobj / max(self.cells, 1)


def _option(region: RegionLayer, key: str, default: float) -> float:
    return float(region.options.get(key, default))


def region_targets(
    out: np.ndarray, truths: list[np.ndarray], region: RegionLayer, seen: int
) -> tuple[RegionTargets, RegionStats]:
    """Darknet's target assignment for one batch.

    Parameters
    ----------
    out : array, shape (B, H, W, num·(coords+1+classes))
        Raw output of the last convolution.
    truths : list of B arrays, shape (T_b, 5)
        ``(x, y, w, h, class)`` per truth box, normalized coordinates.
    region : RegionLayer
        Options used (darknet defaults in brackets): ``object_scale`` [1], ``noobject_scale``
        [1], ``class_scale`` [1], ``coord_scale`` [1], ``thresh`` [0.5], ``rescore`` [0],
        ``bias_match`` [0].
    seen : int
        Images seen so far (darknet's ``net.seen``, already incremented for this batch); the
        prior-matching term is active while ``seen < 12800``.

    Returns
    -------
    targets : RegionTargets
    stats : RegionStats

    Notes
    -----
    The truth's cell is clamped to the grid (:func:`truth_cell`). Darknet stops at the first truth
    with ``x == 0``; we take every truth given.
    """
    act = region_activate(out, region)
    b, h, w, num, _ = act.shape
    anchors = np.asarray(region.anchors, dtype=np.float64).reshape(num, 2) / (w, h)
    pred = pred_boxes(act, anchors)
    obj_s = _option(region, "object_scale", 1)
    noobj_s = _option(region, "noobject_scale", 1)
    cls_s = _option(region, "class_scale", 1)
    coord_s = _option(region, "coord_scale", 1)
    thresh = _option(region, "thresh", 0.5)
    rescore = int(_option(region, "rescore", 0))
    bias_match = int(_option(region, "bias_match", 0))

    dt = out.dtype
    t = RegionTargets(
        coord=np.zeros((b, h, w, num, 4), dt),
        coord_scale=np.zeros((b, h, w, num), dt),
        obj=np.zeros((b, h, w, num), dt),
        obj_scale=np.full((b, h, w, num), noobj_s, dt),
        cls=np.full((b, h, w, num), -1, np.int64),
        cls_scale=np.zeros((b, h, w, num), dt),
    )
    stats = RegionStats(anyobj=float(act[..., 4].sum()), cells=b * h * w * num)

    if seen < PRIOR_SEEN:
        # Pull every box to its anchor at the cell centre: tx = ty = .5, tw = th = log(1) = 0.
        t.coord[..., 0:2] = 0.5
        t.coord_scale[...] = PRIOR_SCALE

    for bi in range(b):
        tr = np.asarray(truths[bi], dtype=np.float64).reshape(-1, 5)
        if len(tr) == 0:
            continue
        # No-object term, ignored where the prediction already overlaps a truth by > thresh.
        best = box_iou(pred[bi][..., None, :], tr[:, :4]).max(axis=-1)
        t.obj_scale[bi][best > thresh] = 0
        for truth in tr:
            x, y, tw, th, c = truth
            i, j = truth_cell(x, y, w, h)
            # Best anchor by shape only: the anchors themselves with bias_match, else the
            # predicted sizes.
            n = best_anchor(anchors if bias_match else pred[bi, j, i, :, 2:4], tw, th)
            iou = float(box_iou(pred[bi, j, i, n], truth[:4]))
            t.coord[bi, j, i, n] = box_target(truth[:4], i, j, w, h, anchors[n])
            t.coord_scale[bi, j, i, n] = coord_s * (2 - tw * th)
            t.obj[bi, j, i, n] = iou if rescore else 1.0
            t.obj_scale[bi, j, i, n] = obj_s
            t.cls[bi, j, i, n] = int(c)
            t.cls_scale[bi, j, i, n] = cls_s
            stats.iou += iou
            stats.recall += iou > 0.5
            stats.obj += float(act[bi, j, i, n, 4])
            stats.cat += float(act[bi, j, i, n, 5 + int(c)])
            stats.count += 1
    return t, stats


def region_loss(out: np.ndarray, targets: RegionTargets, region: RegionLayer):
    """The region loss and its exact gradient with respect to the raw output.

    Parameters
    ----------
    out : array, shape (B, H, W, num·(coords+1+classes))
    targets : RegionTargets
        From :func:`region_targets` (treated as constants).
    region : RegionLayer
        ``softmax`` must be true (YOLOv2); the logistic-class variant is not implemented.

    Returns
    -------
    loss : dict of float
        ``coord``, ``obj``, ``noobj`` (the objectness terms of cells with target 0 and those with a
        truth, split for the progress bar), ``cls``, and ``total`` (their sum), summed over the
        batch.
    dout : array, same shape as ``out``
        ``dL/dout``.
    """
    if not region.softmax:
        raise NotImplementedError("region loss: only softmax=1 (YOLOv2) is implemented")
    r = split_entries(out, region.num, region.classes)
    g = np.zeros_like(r)
    s = targets.coord_scale

    sxy = logistic(r[..., 0:2])
    exy = targets.coord[..., 0:2] - sxy
    lxy = 0.5 * (s[..., None] * exy * exy).sum()
    g[..., 0:2] = -s[..., None] * exy * sxy * (1 - sxy)

    ewh = targets.coord[..., 2:4] - r[..., 2:4]
    lwh = 0.5 * (s[..., None] * ewh * ewh).sum()
    g[..., 2:4] = -s[..., None] * ewh

    so = logistic(r[..., 4])
    eo = targets.obj - so
    lo = 0.5 * targets.obj_scale * eo * eo
    g[..., 4] = -targets.obj_scale * eo * so * (1 - so)
    has = targets.cls >= 0

    cls = r[..., 5:]
    z = cls - cls.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    onehot = np.zeros_like(cls)
    idx = np.nonzero(has)
    onehot[idx + (targets.cls[idx],)] = 1
    cs = targets.cls_scale[..., None]
    lc = -(cs * onehot * logp).sum()
    g[..., 5:] = cs * (np.exp(logp) - onehot) * has[..., None]

    loss = {
        "coord": float(lxy + lwh),
        "obj": float(lo[has].sum()),
        "noobj": float(lo[~has].sum()),
        "cls": float(lc),
    }
    loss["total"] = loss["coord"] + loss["obj"] + loss["noobj"] + loss["cls"]
    return loss, g.reshape(out.shape)
