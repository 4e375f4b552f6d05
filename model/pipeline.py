"""End-to-end inference: image in, every layer's output and the detections out.

One function runs the float reference and one the integer golden model, so the CLI, the
quantization report and the cosimulation all share the exact same pre- and post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.detect import Detection, box_iou, do_nms_sort, get_network_boxes, get_yolo_detections
from model.float_ref import forward
from model.golden import forward_int, host_region, host_yolo, quantize_input
from model.image import letterbox, load_image
from model.network import Network, RegionLayer, YoloLayer
from model.quant import QuantizedNetwork

__all__ = [
    "Inference",
    "class_names",
    "decode_engine_output",
    "LayerQuality",
    "detection_agreement",
    "infer_float",
    "infer_int8",
    "prepare_input",
    "quantization_quality",
    "sqnr_db",
]


@dataclass
class Inference:
    """What one forward pass produced.

    Attributes
    ----------
    input : float32 array, shape (C, H, W): the letterboxed network input in [0, 1]
    outputs : list of arrays, one per darknet layer (float32, or the golden model's integers)
    detections : list of Detection, after NMS, boxes relative to the original image
    image_size : (width, height) of the original image
    """

    input: np.ndarray
    outputs: list[np.ndarray]
    detections: list[Detection]
    image_size: tuple[int, int]


def class_names(classes: int, cfg: str | Path, names: str | Path | None = None) -> list[str]:
    """Class names, one per line, from ``names``, else ``<cfg stem>.names`` beside the cfg.

    Without either file the classes are called ``class0``, ``class1``, ... Blank lines are
    skipped. The file must name exactly ``classes`` classes: darknet reads any number of lines and
    indexes them by class, so fewer lines crash it and more lines -- usually another dataset's
    names file -- silently mislabel every detection; both are errors here.

    Raises
    ------
    ValueError
        The names file has another number of names than the network has classes; the message
        names the file and both counts.
    """
    path = Path(names) if names is not None else Path(cfg).with_suffix(".names")
    if names is None and not path.exists():
        return [f"class{i}" for i in range(classes)]
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != classes:
        raise ValueError(f"{path}: {len(lines)} class names, the network has {classes} classes "
                         "(one name per line)")
    return lines


def prepare_input(image_path: str | Path, input_shape: tuple[int, int, int]):
    """Load an image and letterbox it to the network input, as darknet's ``detector test``.

    Any size letterboxes (darknet's rule) unless the image is so narrow that it shrinks to no
    row or column; images load as 3 channels (RGB), so the network must take 3.

    Returns
    -------
    x : float32 array, shape ``input_shape`` (C, H, W)
    image_size : (width, height) of the original image

    Raises
    ------
    ValueError
        The file cannot be read as an image (:func:`model.image.load_image`), the network does
        not take 3 channels, or the image letterboxes to nothing; the message names the file,
        its size and the network input.
    """
    c, h, w = input_shape
    image = load_image(image_path)
    im_h, im_w = image.shape[1:]
    if image.shape[0] != c:
        raise ValueError(f"{image_path}: the {im_w}x{im_h} image loads as {image.shape[0]} "
                         "channels (RGB, as "
                         f"darknet's load_image_color), the network input (C, H, W) = "
                         f"{tuple(input_shape)} takes {c}")
    try:
        return letterbox(image, w, h), (im_w, im_h)
    except ValueError as exc:
        raise ValueError(f"{image_path}: {exc}") from None


def _detections(outputs, heads: list[tuple[int, RegionLayer | YoloLayer]], input_shape,
                image_size, thresh, nms) -> list[Detection]:
    """Darknet's ``get_network_boxes`` over every head in layer order, then ``do_nms_sort``.

    Ref: darknet src/network.c ``fill_network_boxes`` (yolo and region layers append their boxes
    in layer order); examples/detector.c ``test_detector``.
    """
    _, net_h, net_w = input_shape
    dets: list[Detection] = []
    for index, head in heads:
        decode = get_yolo_detections if isinstance(head, YoloLayer) else get_network_boxes
        dets += decode(outputs[index], head, net_w, net_h, *image_size, thresh)
    if dets:
        do_nms_sort(dets, heads[-1][1].classes, nms)
    return dets


def infer_float(net: Network, x: np.ndarray, image_size, thresh=0.5, nms=0.45) -> Inference:
    """Float reference forward pass and darknet's box decoding and NMS."""
    outputs = forward(net, x)
    dets = _detections(outputs, net.heads, net.input_shape, image_size, thresh, nms)
    return Inference(x, outputs, dets, image_size)


def infer_int8(
    qnet: QuantizedNetwork, x: np.ndarray, image_size, thresh=0.5, nms=0.45
) -> Inference:
    """Integer golden model forward pass; decoding as :func:`infer_float` on the host."""
    outputs = forward_int(qnet, quantize_input(x))
    dets = _detections(outputs, _heads(qnet), qnet.input_shape, image_size, thresh, nms)
    return Inference(x, outputs, dets, image_size)


def _heads(qnet: QuantizedNetwork) -> list[tuple[int, RegionLayer | YoloLayer]]:
    """``(darknet index, layer)`` of every region and yolo layer, in layer order."""
    return [(i, layer.layer) for i, layer in enumerate(qnet.layers)
            if layer.kind in ("region", "yolo")]


def decode_engine_output(
    qnet: QuantizedNetwork, acc, image_size, thresh=0.5, nms=0.45
) -> list[Detection]:
    """Detections from the engine's int32 outputs, exactly as :func:`infer_int8` decodes its own.

    Parameters
    ----------
    qnet : QuantizedNetwork with region or yolo heads
    acc : dict or integer array
        The int32 accumulators the engine wrote, keyed by the darknet index of each head's
        producing convolution (``firmware.program.Program.read_outputs``), each of shape
        (O, H, W); a network with one head may pass its array alone.
    image_size : (width, height) of the original image
    """
    heads = _heads(qnet)
    if not isinstance(acc, dict):
        if len(heads) != 1:
            raise ValueError(f"{len(heads)} detection heads need one output each (a dict keyed "
                             "by producer), not a single array")
        acc = {heads[0][0] - 1: acc}
    outputs = {}
    for index, head in heads:
        host = host_yolo if isinstance(head, YoloLayer) else host_region
        outputs[index] = host(qnet.layers[index - 1], head, acc[index - 1])
    return _detections(outputs, heads, qnet.input_shape, image_size, thresh, nms)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(Σ ref² / Σ (ref - test)²)`` in dB."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - np.asarray(test, np.float64)) ** 2)
    signal = np.sum(reference**2)
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


@dataclass
class LayerQuality:
    """Quantization quality of one layer: its output dequantized vs the float reference."""

    index: int
    kind: str
    shape: tuple[int, int, int]
    sqnr_db: float


def quantization_quality(
    qnet: QuantizedNetwork, float_run: Inference, int_run: Inference
) -> list[LayerQuality]:
    """Per-layer SQNR of the golden model's (dequantized) outputs against the float reference."""
    rows = []
    for index, (layer, f_out, q_out) in enumerate(
        zip(qnet.layers, float_run.outputs, int_run.outputs, strict=True)
    ):
        if layer.kind in ("region", "yolo"):
            deq = q_out  # computed on the host in float
        elif layer.kind == "convolutional":
            deq = q_out.astype(np.float64) * layer.output_scale[:, None, None]
        else:  # maxpool, route, upsample: int8 on their source's scale
            deq = q_out.astype(np.float64) * layer.scale
        rows.append(LayerQuality(index, layer.kind, tuple(f_out.shape), sqnr_db(f_out, deq)))
    return rows


def detection_agreement(reference: list[Detection], test: list[Detection], iou=0.5,
                        per_class=False):
    """Match detections by class and IoU.

    Parameters
    ----------
    reference, test : lists of Detection (after NMS)
    iou : float
    per_class : bool
        False: a detection is its box and best class. True: every class with a nonzero
        probability is a detection of its own -- what darknet labels (a box scoring both "car" and
        "truck" above the threshold is drawn with both), so a near tie between two classes that
        flips under quantization still counts as found.

    Returns
    -------
    matched : int
        Reference detections that ``test`` has too: same class and IoU at least ``iou`` (each
        test detection matches at most one).
    total : int
        Reference detections (boxes with some nonzero class probability; per class if
        ``per_class``).
    """
    def kept(dets):
        if per_class:
            return [(d, int(c)) for d in dets for c in np.flatnonzero(d.probs > 0)]
        return [(d, int(np.argmax(d.probs))) for d in dets if np.any(d.probs > 0)]

    ref, cand = kept(reference), kept(test)
    used = set()
    matched = 0
    for d, cls in ref:
        for j, (e, other) in enumerate(cand):
            if j in used or other != cls:
                continue
            if box_iou(_xywh(d), _xywh(e)[None])[0] >= iou:
                used.add(j)
                matched += 1
                break
    return matched, len(ref)



def _xywh(d: Detection) -> np.ndarray:
    return np.array([d.x, d.y, d.w, d.h], np.float32)
