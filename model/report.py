"""Which activation calibration keeps more accuracy: a measured comparison.

The quantizer offers two estimators of each activation tensor's range (docs/fixed-point.md §6).
:func:`compare_calibration` calibrates with each on one set of images and measures, on a second,
held-out set, how closely the int8 golden model follows the float reference: per-layer SQNR and
how many of the float detections the integer model reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.image import letterbox
from model.network import Network
from model.pipeline import detection_agreement, infer_float, infer_int8, quantization_quality
from model.quant import CALIBRATION_METHODS, quantize_network

__all__ = ["CalibrationResult", "compare_calibration", "image_variants"]


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
