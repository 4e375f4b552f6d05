"""Detection metrics: PASCAL VOC mAP@0.5 (11-point and all-point) and COCO mAP@[.5:.95].

Inputs are per image, in darknet's normalized centre/size convention:

- detections: float array ``(k, 6)`` per image, ``(x, y, w, h, score, class)``;
- ground truth: float array ``(n, 5)`` per image, ``(x, y, w, h, class)``, and optionally a bool
  array ``(n,)`` of *difficult* flags.

Conventions (each is the reference implementation's, adapted to normalized coordinates):

- **VOC** (Ref: py-faster-rcnn ``lib/datasets/voc_eval.py``): per class, detections sorted by
  decreasing score (stable sort, so ties keep input order); each detection is compared with *all*
  truths of its class in its image and takes the one of highest IoU; it is a true positive if that
  IoU is ``> thresh`` (strict) and the truth is not yet taken, a false positive if taken or the IoU
  is too small, and **ignored** (neither) if the truth is difficult. Difficult truths do not count
  in the number of positives. IoU is continuous (no ``+1`` pixel widths: boxes are normalized).
  ``11point`` averages the interpolated precision at recall 0, 0.1, ..., 1 (VOC2007);
  ``all`` integrates the precision envelope over every recall change (VOC2010+).
- **COCO** (Ref: pycocotools ``cocoeval.py`` ``evaluateImg``/``accumulate``): at each IoU
  threshold 0.5:0.05:0.95, each detection (by decreasing score, at most ``max_dets`` per image
  and class) takes the not-yet-matched truth of highest IoU ``>= thresh``, preferring non-ignored
  truths; a detection matched to an ignored (difficult) truth is ignored. Precision is the
  envelope sampled at 101 recall points.
- Classes without a (non-difficult) truth in the whole set have no AP and are left out of the
  mean, as both references do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ClassResult",
    "EvalResult",
    "average_precision",
    "coco_map",
    "evaluate_detections",
    "plot_pr_curves",
    "voc_match",
]


def _xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between centre/size boxes ``a`` (m, 4) and ``b`` (n, 4): shape (m, n)."""
    a, b = _xyxy(a), _xyxy(b)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "all") -> float:
    """Area under a precision/recall curve.

    Parameters
    ----------
    recall, precision : arrays, shape (k,)
        Cumulative values after each detection in decreasing score order.
    method : {"all", "11point", "coco101"}
        ``all``: VOC2010+ area under the monotone precision envelope; ``11point``: VOC2007 mean
        of ``max(precision[recall >= t])`` over t = 0, 0.1, ..., 1; ``coco101``: COCO's mean of
        the envelope sampled (left side) at recall 0, 0.01, ..., 1.

    Returns
    -------
    ap : float
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if method == "11point":
        return float(
            np.mean(
                [precision[recall >= t].max() if (recall >= t).any() else 0.0
                 for t in np.linspace(0, 1, 11)]
            )
        )
    # Monotone envelope: precision at recall r is the best precision at any recall >= r.
    env = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    if method == "all":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], env, [0.0]])
        i = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    if method == "coco101":
        idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        return float(np.mean([env[k] if k < len(env) else 0.0 for k in idx]))
    raise ValueError(f"unknown AP method {method!r}")


def voc_match(dets, gts, difficult, cls: int, thresh: float = 0.5):
    """VOC matching of one class over a set of images.

    Parameters
    ----------
    dets : list of arrays, shape (k_i, 6)
    gts : list of arrays, shape (n_i, 5)
    difficult : list of bool arrays, shape (n_i,)
    cls : int
    thresh : float
        A detection is a true positive if its best IoU is ``> thresh``.

    Returns
    -------
    scores : array, shape (k,)
        Scores of the class's detections, decreasing (ignored detections removed).
    tp : bool array, shape (k,)
    npos : int
        Non-difficult truths of the class.
    """
    scores, img_of, row_of, ious = [], [], [], []
    gbox, gdiff = [], []
    for img, (d, g, df) in enumerate(zip(dets, gts, difficult, strict=True)):
        d = np.asarray(d, np.float64).reshape(-1, 6)
        d = d[d[:, 5] == cls]
        g = np.asarray(g, np.float64).reshape(-1, 5)
        m = g[:, 4] == cls
        gbox.append(g[m, :4])
        gdiff.append(np.asarray(df, bool)[m])
        ious.append(_iou_matrix(d[:, :4], gbox[-1]))  # (k_img, n_img), one call per image
        scores.extend(d[:, 4])
        img_of.extend([img] * len(d))
        row_of.extend(range(len(d)))
    npos = int(sum((~df).sum() for df in gdiff))
    taken = [np.zeros(len(b), bool) for b in gbox]
    kept_scores, tp = [], []
    for k in np.argsort(-np.asarray(scores), kind="stable"):
        img, row = img_of[k], row_of[k]
        if len(gbox[img]) == 0:
            kept_scores.append(scores[k])
            tp.append(False)
            continue
        j = int(np.argmax(ious[img][row]))
        if ious[img][row, j] > thresh:
            if gdiff[img][j]:
                continue  # matched a difficult truth: neither TP nor FP
            kept_scores.append(scores[k])
            tp.append(not taken[img][j])
            taken[img][j] = True
        else:
            kept_scores.append(scores[k])
            tp.append(False)
    return np.array(kept_scores), np.array(tp, bool), npos


@dataclass
class ClassResult:
    """Per-class VOC result at one IoU threshold.

    Attributes
    ----------
    npos : int
    recall, precision : arrays, shape (k,)
    ap_all, ap_11 : float
        All-point and 11-point AP (NaN when ``npos == 0``).
    """

    npos: int
    recall: np.ndarray
    precision: np.ndarray
    ap_all: float
    ap_11: float


@dataclass
class EvalResult:
    """mAP over classes (classes without truth left out) and the per-class results."""

    classes: list[ClassResult] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    map_all: float = float("nan")
    map_11: float = float("nan")
    coco_map: float = float("nan")

    def summary(self) -> str:
        """One line per class and the means, for printing."""
        lines = [f"{'class':<12} {'npos':>5} {'AP(all)':>8} {'AP(11pt)':>9}"]
        for n, c in zip(self.names, self.classes, strict=True):
            lines.append(f"{n:<12} {c.npos:>5} {c.ap_all:>8.4f} {c.ap_11:>9.4f}")
        lines.append(
            f"mAP@0.5 all-point {self.map_all:.4f}  11-point {self.map_11:.4f}  "
            f"COCO mAP@[.5:.95] {self.coco_map:.4f}"
        )
        return "\n".join(lines)


def evaluate_detections(dets, gts, num_classes: int, difficult=None, names=None,
                        thresh: float = 0.5, coco: bool = True) -> EvalResult:
    """VOC mAP at ``thresh`` (both conventions) and, optionally, COCO mAP@[.5:.95].

    Parameters
    ----------
    dets : list of arrays, shape (k_i, 6)
        ``(x, y, w, h, score, class)`` per detection, one array per image.
    gts : list of arrays, shape (n_i, 5)
        ``(x, y, w, h, class)`` per truth.
    num_classes : int
    difficult : list of bool arrays, shape (n_i,), optional
    names : list of str, optional
    thresh : float
    coco : bool

    Returns
    -------
    EvalResult
    """
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detection lists for {len(gts)} images")
    if difficult is None:
        difficult = [np.zeros(len(np.asarray(g).reshape(-1, 5)), bool) for g in gts]
    res = EvalResult(names=list(names) if names else [str(c) for c in range(num_classes)])
    for c in range(num_classes):
        _, tp, npos = voc_match(dets, gts, difficult, c, thresh)
        ctp = np.cumsum(tp)
        rec = ctp / npos if npos else np.zeros(len(tp))
        prec = ctp / np.arange(1, len(tp) + 1)
        ok = npos > 0
        res.classes.append(ClassResult(
            npos, rec, prec,
            average_precision(rec, prec, "all") if ok else float("nan"),
            average_precision(rec, prec, "11point") if ok else float("nan"),
        ))
    valid = [c for c in res.classes if c.npos > 0]
    if valid:
        res.map_all = float(np.mean([c.ap_all for c in valid]))
        res.map_11 = float(np.mean([c.ap_11 for c in valid]))
    if coco:
        res.coco_map = coco_map(dets, gts, num_classes, difficult)
    return res


def _coco_class_ap(dets, gts, difficult, cls, thresh, max_dets):
    scores, matched, ignored = [], [], []
    npig = 0
    for d, g, df in zip(dets, gts, difficult, strict=True):
        d = np.asarray(d, np.float64).reshape(-1, 6)
        d = d[d[:, 5] == cls]
        d = d[np.argsort(-d[:, 4], kind="stable")][:max_dets]
        g = np.asarray(g, np.float64).reshape(-1, 5)
        m = g[:, 4] == cls
        gbox, gig = g[m, :4], np.asarray(df, bool)[m]
        # Non-ignored truths first, as cocoeval sorts them.
        go = np.argsort(gig, kind="stable")
        gbox, gig = gbox[go], gig[go]
        npig += int((~gig).sum())
        ious = _iou_matrix(d[:, :4], gbox) if len(d) and len(gbox) else np.zeros((len(d), 0))
        gtm = np.zeros(len(gbox), bool)
        for k in range(len(d)):
            best, m_idx = min(thresh, 1 - 1e-10), -1
            for j in range(len(gbox)):
                if gtm[j]:
                    continue
                if m_idx > -1 and not gig[m_idx] and gig[j]:
                    break  # a regular truth is matched; ignored ones come after
                if ious[k, j] < best:
                    continue
                best, m_idx = ious[k, j], j
            scores.append(d[k, 4])
            if m_idx >= 0:
                gtm[m_idx] = True
                matched.append(True)
                ignored.append(bool(gig[m_idx]))
            else:
                matched.append(False)
                ignored.append(False)
    if npig == 0:
        return None
    order = np.argsort(-np.array(scores), kind="mergesort")
    matched = np.array(matched, bool)[order]
    ignored = np.array(ignored, bool)[order]
    keep = ~ignored
    tp = np.cumsum(matched[keep])
    fp = np.cumsum(~matched[keep])
    rec = tp / npig
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(rec, prec, "coco101")


def coco_map(dets, gts, num_classes: int, difficult=None, max_dets: int = 100) -> float:
    """COCO mAP@[.5:.95]: mean over classes and IoU thresholds 0.50, 0.55, ..., 0.95.

    Parameters as :func:`evaluate_detections`; ``max_dets`` detections per image and class are
    kept (COCO's ``maxDets=100``, applied per class as ``evaluateImg`` does). Difficult truths are
    COCO's *ignored* truths.
    """
    if difficult is None:
        difficult = [np.zeros(len(np.asarray(g).reshape(-1, 5)), bool) for g in gts]
    aps = []
    for c in range(num_classes):
        per_t = [_coco_class_ap(dets, gts, difficult, c, t, max_dets)
                 for t in np.linspace(0.5, 0.95, 10)]
        if per_t[0] is not None:
            aps.extend(per_t)
    return float(np.mean(aps)) if aps else float("nan")


def plot_pr_curves(result: EvalResult, path: str | Path, title: str = "") -> None:
    """Precision/recall curve of every class (VOC, IoU 0.5) with its all-point AP, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for name, c in zip(result.names, result.classes, strict=True):
        if c.npos:
            ax.plot(np.r_[0, c.recall], np.r_[1, c.precision], label=f"{name} AP={c.ap_all:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"mAP@0.5 = {result.map_all:.4f}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
