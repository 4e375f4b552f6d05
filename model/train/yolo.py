"""YOLOv3 yolo loss, as darknet computes it, with an exact gradient.

Ref: darknet src/yolo_layer.c ``forward_yolo_layer``, ``delta_yolo_box``, ``delta_yolo_class``,
``backward_yolo_layer``.

As for the region loss (:mod:`model.train.region`), two steps:

1. :func:`yolo_targets` decides, per head, which output entries are pulled towards which target:

   - every box whose prediction overlaps no truth by more than ``ignore_thresh`` is pulled to
     objectness 0; one that overlaps its best truth by more than ``truth_thresh`` (default 1:
     never) is made responsible for that truth (objectness 1, its class, its box);
   - each truth picks the best of **all** the network's anchors by shape only; the head whose
     ``mask`` holds that anchor makes the box of the truth's cell with that anchor responsible
     (box targets with scale ``2 - w·h``, objectness 1, its class); the other heads leave it;
   - classes are independent logistics: a box's first truth sets the targets of all classes
     (1 for its class, 0 for the others), a later truth on the same box adds its class (target
     1), as ``delta_yolo_class`` does when the box's class delta is already set.

   Box entries written twice keep the last write, as darknet's ``delta`` array does. The targets
   are piecewise constant in the prediction: stop-gradient.
2. :func:`yolo_loss` is a smooth function of the raw output given the targets. Darknet's delta
   is ``scale·(target - σ(x))`` for x, y, objectness and classes and ``scale·(target - x)`` for
   w, h, and ``backward_yolo_layer`` adds it to the convolution's delta **as is** (an ``axpy``,
   on the CPU and the GPU path alike: unlike the region layer, no logistic gradient is applied).
   ``σ(x) - t`` is the gradient of the logistic cross-entropy, so the function darknet descends
   is::

       L = Σ s_xy·CE(t, σ(x))          for box x, y        (soft targets in [0, 1))
         + Σ ½·s_wh·(t - x)²           for box w, h        (log-space target)
         + Σ s_obj·CE(t, σ(x))         for objectness      (s_obj 0 where ignored)
         + Σ CE(t, σ(x))               for every class of a responsible box

   with ``CE(t, p) = -t·log p - (1-t)·log(1-p) - H(t)``: the entropy ``H(t)`` of the target is a
   constant that makes each term 0 at its minimum (it matters for x, y only, whose targets are
   soft). ``-dL/dx`` is darknet's delta exactly. Darknet reports ``Σ delta²``; we report ``L``.

Layout: the raw output of a head's convolution is NHWC, ``(B, H, W, len(mask)·(5+classes))``,
channel ``n·(5+classes) + k`` for box ``n`` (anchor ``mask[n]``) and entry ``k`` (x, y, w, h,
obj, class 0..). Truth boxes are ``(x, y, w, h, class)``, normalized, as for the region loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.detect import box_iou
from model.network import YoloLayer
from model.train.region import (
    RegionStats,
    activate,
    best_anchor,
    box_target,
    logistic,
    pred_boxes,
    split_entries,
    truth_cell,
)

__all__ = ["YoloTargets", "logistic_xent", "yolo_loss", "yolo_targets"]

#: ``[yolo]`` defaults. Ref: darknet src/parser.c ``parse_yolo``.
IGNORE_THRESH = 0.5
TRUTH_THRESH = 1.0


@dataclass
class YoloTargets:
    """Targets and weights of one head's yolo loss (all stop-gradient).

    Attributes
    ----------
    coord : array, shape (B, H, W, n, 4)
        Targets for σ(x), σ(y) (cell offsets) and raw w, h (``log(truth / anchor)``).
    coord_scale : array, shape (B, H, W, n)
        ``2 - w·h`` of the responsible truth, 0 elsewhere.
    obj : array, shape (B, H, W, n)
        Objectness target, 0 or 1.
    obj_scale : array, shape (B, H, W, n)
        1, or 0 where ignored (best IoU above ``ignore_thresh``, not responsible).
    cls : array, shape (B, H, W, n, classes)
        Class targets, 0 or 1 (several 1s when several truths share a box).
    cls_mask : bool array, shape (B, H, W, n)
        The boxes that have class targets.
    """

    coord: np.ndarray
    coord_scale: np.ndarray
    obj: np.ndarray
    obj_scale: np.ndarray
    cls: np.ndarray
    cls_mask: np.ndarray

    def assign(self, idx: tuple, truth: np.ndarray, i: int, j: int, anchor: np.ndarray) -> None:
        """Make box ``idx = (b, j, i, n)`` responsible for ``truth`` ``(x, y, w, h, class)``:
        box targets (``delta_yolo_box``), objectness 1, its class (``delta_yolo_class``)."""
        _, h, w = self.coord.shape[:3]
        self.coord[idx] = box_target(truth[:4], i, j, w, h, anchor)
        self.coord_scale[idx] = 2 - truth[2] * truth[3]
        self.obj[idx] = 1
        self.obj_scale[idx] = 1
        if not self.cls_mask[idx]:
            self.cls[idx] = 0
            self.cls_mask[idx] = True
        self.cls[idx + (int(truth[4]),)] = 1


def _option(layer: YoloLayer, key: str, default: float) -> float:
    return float(layer.options.get(key, default))


def yolo_targets(
    out: np.ndarray, truths: list[np.ndarray], layer: YoloLayer, net_w: int, net_h: int
) -> tuple[YoloTargets, RegionStats]:
    """Darknet's target assignment of one yolo head for one batch.

    Parameters
    ----------
    out : array, shape (B, H, W, len(mask)·(5+classes))
        Raw output of the head's convolution.
    truths : list of B arrays, shape (T_b, 5)
        ``(x, y, w, h, class)`` per truth box, normalized coordinates.
    layer : YoloLayer
        ``anchors`` (all of the network's, in input pixels) and ``mask``; options used
        (darknet defaults in brackets): ``ignore_thresh`` [0.5], ``truth_thresh`` [1].
    net_w, net_h : int
        Network input size (the anchors' unit).

    Returns
    -------
    targets : YoloTargets
    stats : RegionStats
        Darknet's ``Region Avg IOU`` figures for the truths this head is responsible for.

    Notes
    -----
    The truth's cell is clamped to the grid. Darknet stops at the first truth with ``x == 0``;
    we take every truth given.
    """
    n_box = len(layer.mask)
    act = activate(split_entries(out, n_box, layer.classes), softmax=False)
    b, h, w, _, _ = act.shape
    anchors = np.asarray(layer.anchors, np.float64).reshape(-1, 2) / (net_w, net_h)
    mine = anchors[list(layer.mask)]
    pred = pred_boxes(act, mine)
    ignore = _option(layer, "ignore_thresh", IGNORE_THRESH)
    truth_thresh = _option(layer, "truth_thresh", TRUTH_THRESH)

    dt = out.dtype
    t = YoloTargets(
        coord=np.zeros((b, h, w, n_box, 4), dt),
        coord_scale=np.zeros((b, h, w, n_box), dt),
        obj=np.zeros((b, h, w, n_box), dt),
        obj_scale=np.ones((b, h, w, n_box), dt),
        cls=np.zeros((b, h, w, n_box, layer.classes), dt),
        cls_mask=np.zeros((b, h, w, n_box), bool),
    )
    stats = RegionStats(anyobj=float(act[..., 4].sum()), cells=b * h * w * n_box)
    for bi in range(b):
        tr = np.asarray(truths[bi], np.float64).reshape(-1, 5)
        if len(tr) == 0:
            continue  # every box is pulled to objectness 0
        ious = box_iou(pred[bi][..., None, :], tr[:, :4])  # (H, W, n, T)
        best = ious.max(axis=-1)
        t.obj_scale[bi][best > ignore] = 0
        # argmax keeps the first truth on ties, as darknet's strict '>'.
        for j, i, n in zip(*np.nonzero(best > truth_thresh), strict=True):
            t.assign((bi, j, i, n), tr[ious[j, i, n].argmax()], i, j, mine[n])
        for truth in tr:
            best_n = best_anchor(anchors, truth[2], truth[3])
            if best_n not in layer.mask:
                continue  # another head's anchor
            n = layer.mask.index(best_n)
            i, j = truth_cell(truth[0], truth[1], w, h)
            idx = (bi, j, i, n)
            t.assign(idx, truth, i, j, mine[n])
            iou = float(box_iou(pred[idx], truth[:4]))
            stats.iou += iou
            stats.recall += iou > 0.5
            stats.obj += float(act[idx + (4,)])
            stats.cat += float(act[idx + (5 + int(truth[4]),)])
            stats.count += 1
    return t, stats


def logistic_xent(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cross-entropy of a logistic output against a target, minus the target's entropy.

    Parameters
    ----------
    z : array, any shape
        Logits.
    t : array, broadcasting with ``z``
        Targets, 0..1.

    Returns
    -------
    array, the broadcast shape
        ``-t·log σ(z) - (1-t)·log(1-σ(z)) - H(t) = log(1 + e^z) - t·z + t·log t + (1-t)·log(1-t)``,
        0 where ``σ(z) = t``; its derivative in ``z`` is ``σ(z) - t``. ``H`` is a constant; a
        target outside [0, 1] (a truth_thresh box whose truth centre lies in another cell) has no
        minimum and takes the entropy of the nearest bound, 0.
    """
    tc = np.clip(t, 0, 1)
    return np.logaddexp(0, z) - t * z + _xlogx(tc) + _xlogx(1 - tc)


def _xlogx(p: np.ndarray) -> np.ndarray:
    """``p·log p`` with ``0·log 0 = 0``."""
    return p * np.log(np.where(p > 0, p, 1))


def yolo_loss(out: np.ndarray, targets: YoloTargets, layer: YoloLayer):
    """One head's yolo loss and its exact gradient with respect to the raw output.

    Parameters
    ----------
    out : array, shape (B, H, W, len(mask)·(5+classes))
    targets : YoloTargets
        From :func:`yolo_targets` (treated as constants).
    layer : YoloLayer

    Returns
    -------
    loss : dict of float
        ``coord``, ``obj`` (objectness of boxes with target 1), ``noobj`` (target 0), ``cls``
        and ``total``, summed over the batch.
    dout : array, same shape as ``out``
        ``dL/dout`` = ``-delta`` of darknet.
    """
    r = split_entries(out, len(layer.mask), layer.classes)
    g = np.zeros_like(r)
    t = targets
    s = t.coord_scale[..., None]

    # x, y: darknet's delta s·(t - σ(x)) reaches the convolution unchanged.
    lxy = (s * logistic_xent(r[..., 0:2], t.coord[..., 0:2])).sum()
    g[..., 0:2] = s * (logistic(r[..., 0:2]) - t.coord[..., 0:2])

    ewh = t.coord[..., 2:4] - r[..., 2:4]
    lwh = 0.5 * (s * ewh * ewh).sum()
    g[..., 2:4] = -s * ewh

    lo = t.obj_scale * logistic_xent(r[..., 4], t.obj)
    g[..., 4] = t.obj_scale * (logistic(r[..., 4]) - t.obj)

    m = t.cls_mask[..., None]
    lc = (m * logistic_xent(r[..., 5:], t.cls)).sum()
    g[..., 5:] = m * (logistic(r[..., 5:]) - t.cls)

    pos = t.obj > 0
    loss = {
        "coord": float(lxy + lwh),
        "obj": float(lo[pos].sum()),
        "noobj": float(lo[~pos].sum()),
        "cls": float(lc),
    }
    loss["total"] = loss["coord"] + loss["obj"] + loss["noobj"] + loss["cls"]
    return loss, g.reshape(out.shape)
