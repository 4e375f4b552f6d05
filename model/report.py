"""Quantization quality reports: the int8 golden model measured against the float reference.

- :func:`run_golden_report` (``owlet report``): calibrated on one image and variants of it,
  per-layer SQNR, the detections both find, annotated images and an SQNR plot. No hardware is
  involved (``owlet sim`` runs the RTL).
- :func:`compare_calibration` (``owlet calib-report``): the quantizer offers two estimators of
  each activation tensor's range (docs/fixed-point.md §6); this calibrates with each on one set
  of images and measures, on a second, held-out set, how closely the int8 golden model follows
  the float reference: per-layer SQNR and how many float detections the integer model keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.darknet import load_darknet
from model.image import draw_detections, letterbox, load_image
from model.network import Network
from model.pipeline import (
    class_names,
    detection_agreement,
    infer_float,
    infer_int8,
    prepare_input,
    quantization_quality,
)
from model.quant import CALIBRATION_METHODS, quantize_network

__all__ = [
    "CalibrationResult",
    "compare_calibration",
    "image_variants",
    "plot_sqnr",
    "run_golden_report",
]


@dataclass
class CalibrationResult:
    """Quality of one calibration method on the held-out images.

    ``layer_sqnr_db[i]`` is darknet layer ``i``'s SQNR averaged (in dB) over the images;
    ``matched`` of ``total`` float detections were reproduced by the integer model.
    """

    method: str
    layer_sqnr_db: list[float]
    matched: int
    total: int


def image_variants(image: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic variants of one image (crops, flips, brightness), each ``(3, H, W)``.

    Parameters
    ----------
    image : float32 array, shape (3, H, W), values in [0, 1]
    count : int
    seed : int
    """
    rng = np.random.default_rng(seed)
    _, h, w = image.shape
    variants = []
    for _ in range(count):
        ch, cw = int(h * rng.uniform(0.5, 0.9)), int(w * rng.uniform(0.5, 0.9))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = image[:, y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        variants.append(np.clip(crop * rng.uniform(0.6, 1.4), 0, 1).astype(np.float32))
    return variants


def compare_calibration(
    net: Network,
    calibration: list[np.ndarray],
    held_out: list[np.ndarray],
    thresh: float = 0.2,
) -> list[CalibrationResult]:
    """Calibrate with every method on ``calibration`` and evaluate on ``held_out``.

    Parameters
    ----------
    net : Network with weights
    calibration, held_out : lists of float32 images, each shape (3, H, W), values in [0, 1]
        Any size; they are letterboxed to the network input here.
    thresh : float
        Detection threshold for the agreement count.
    """
    _, net_h, net_w = net.input_shape

    def prepared(images):
        return [(letterbox(img, net_w, net_h), (img.shape[2], img.shape[1])) for img in images]

    calib_inputs = [x for x, _ in prepared(calibration)]
    evaluation = [(x, size, infer_float(net, x, size, thresh)) for x, size in prepared(held_out)]
    results = []
    for method in CALIBRATION_METHODS:
        qnet = quantize_network(net, calib_inputs, method)
        sqnr = np.zeros(len(net.layers))
        matched = total = 0
        for x, size, float_run in evaluation:
            int_run = infer_int8(qnet, x, size, thresh)
            sqnr += [row.sqnr_db for row in quantization_quality(qnet, float_run, int_run)]
            m, t = detection_agreement(float_run.detections, int_run.detections)
            matched, total = matched + m, total + t
        results.append(CalibrationResult(method, list(sqnr / len(evaluation)), matched, total))
    return results


def plot_sqnr(rows, path: Path) -> None:
    """Bar chart of per-layer SQNR in dB, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([f"{r.index}\n{r.kind[:4]}" for r in rows], [r.sqnr_db for r in rows], color="#3b7dd8")
    ax.set_ylabel("SQNR int8 vs float (dB)")
    ax.set_title("Quantization quality per darknet layer")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_golden_report(cfg: Path, weights: Path, image: Path, outdir: Path, thresh: float,
                      names: Path | None = None, variants: int = 8) -> int:
    """Run the comparison at detection threshold ``thresh``; returns the exit status (0).

    Calibrates (max) on ``image`` and ``variants`` seeded variants of it (:func:`image_variants`,
    seed 1); prints the per-layer SQNR on ``image`` and how many float detections int8 keeps
    there and on ``variants`` held-out variants (seed 2), by best class and per labelled class
    (:func:`model.pipeline.detection_agreement`), both ways.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    net = load_darknet(cfg, weights)
    _, net_h, net_w = net.input_shape
    x, image_size = prepare_input(image, net.input_shape)
    pixels = load_image(image)
    calibration = [x] + [letterbox(v, net_w, net_h) for v in image_variants(pixels, variants, 1)]
    qnet = quantize_network(net, calibration)
    float_run = infer_float(net, x, image_size, thresh)
    int_run = infer_int8(qnet, x, image_size, thresh)
    rows = quantization_quality(qnet, float_run, int_run)
    print(f"model {cfg.name} + {weights.name}, image {image.name} {image_size[0]}x{image_size[1]}, "
          f"calibrated on it and {variants} variants")
    print(f"{'layer':>5}  {'kind':<14} {'output':<12} {'SQNR dB':>8}")
    for row in rows:
        print(f"{row.index:>5}  {row.kind:<14} {'x'.join(map(str, row.shape)):<12} "
              f"{row.sqnr_db:>8.1f}")
    runs = [(float_run, int_run)]
    for variant in image_variants(pixels, variants, 2):
        size = (variant.shape[2], variant.shape[1])
        xv = letterbox(variant, net_w, net_h)
        runs.append((infer_float(net, xv, size, thresh), infer_int8(qnet, xv, size, thresh)))
    for label, chosen in ((image.name, runs[:1]), (f"{variants} held-out variants", runs[1:])):
        for per_class in (False, True):
            kept = [detection_agreement(f.detections, i.detections, per_class=per_class)
                    for f, i in chosen]
            extra = [detection_agreement(i.detections, f.detections, per_class=per_class)
                     for f, i in chosen]
            print(f"{label}, {'per class' if per_class else 'best class'}: int8 finds "
                  f"{sum(m for m, _ in kept)}/{sum(t for _, t in kept)} float detections; "
                  f"{sum(t - m for m, t in extra)} int8 detections float does not have")
    classes = net.heads[-1][1].classes if net.heads else 0
    labels = class_names(classes, cfg, names)
    draw_detections(image, float_run.detections, labels, outdir / "detections-float.png")
    draw_detections(image, int_run.detections, labels, outdir / "detections-int8.png")
    plot_sqnr(rows, outdir / "sqnr.png")
    print(f"wrote {outdir}/detections-float.png, detections-int8.png, sqnr.png")
    print(f"golden: {len(rows)} layers, SQNR of the last layer {rows[-1].sqnr_db:.1f} dB "
          f"at thresh {thresh}")
    return 0
