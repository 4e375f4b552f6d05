"""The network description shared by every part of Owlet.

A :class:`Network` is the float model as darknet defines it: an input shape and a list of
layers indexed exactly as darknet indexes them (so ``layers[i]`` is darknet layer ``i``). Layers
carry their parameters as float32 numpy arrays in darknet's storage order.

Shapes are always ``(C, H, W)`` (darknet's CHW order, batch dimension dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ConvLayer",
    "Layer",
    "MaxpoolLayer",
    "Network",
    "RegionLayer",
    "RouteLayer",
    "UpsampleLayer",
    "YoloLayer",
    "conv_output_hw",
    "maxpool_output_hw",
]

Shape = tuple[int, int, int]


def conv_output_hw(h: int, w: int, size: int, stride: int, padding: int) -> tuple[int, int]:
    """Output height and width of a darknet convolution.

    Ref: darknet src/convolutional_layer.c ``convolutional_out_height``.
    """
    return (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1


def maxpool_output_hw(h: int, w: int, size: int, stride: int, padding: int) -> tuple[int, int]:
    """Output height and width of a darknet maxpool with total padding ``padding``.

    Ref: darknet src/maxpool_layer.c ``make_maxpool_layer`` (``(w + padding - size)/stride + 1``).
    """
    return (h + padding - size) // stride + 1, (w + padding - size) // stride + 1


@dataclass
class ConvLayer:
    """A darknet ``[convolutional]`` layer.

    Attributes
    ----------
    in_shape, out_shape : (C, H, W)
    filters, size, stride : int
    padding : int
        Zero padding on every side (darknet's ``pad=1`` means ``size // 2``).
    batch_normalize : bool
    activation : str
        ``"leaky"`` (slope 0.1) or ``"linear"``.
    weights : float32 array, shape (filters, C, size, size)
        OIHW, darknet's storage order.
    biases : float32 array, shape (filters,)
    scales, rolling_mean, rolling_variance : float32 arrays, shape (filters,), or None
        Batch-norm parameters, present iff ``batch_normalize``.
    """

    in_shape: Shape
    out_shape: Shape
    filters: int
    size: int
    stride: int
    padding: int
    batch_normalize: bool
    activation: str
    weights: np.ndarray
    biases: np.ndarray
    scales: np.ndarray | None = None
    rolling_mean: np.ndarray | None = None
    rolling_variance: np.ndarray | None = None

    kind = "convolutional"


@dataclass
class MaxpoolLayer:
    """A darknet ``[maxpool]`` layer.

    ``padding`` is darknet's total padding (default ``size - 1``); the window starts at offset
    ``-(padding // 2)``, so a size-2 stride-1 pool pads bottom/right only and keeps the map size.
    Out-of-range positions never win (darknet uses ``-FLT_MAX``).
    """

    in_shape: Shape
    out_shape: Shape
    size: int
    stride: int
    padding: int

    kind = "maxpool"


@dataclass
class RegionLayer:
    """A darknet ``[region]`` layer (YOLOv2 detection head).

    ``in_shape == out_shape == (num * (coords + 1 + classes), H, W)``. ``anchors`` has shape
    (num, 2) in grid-cell units. The training-only keys of the section are kept in ``options``.
    """

    in_shape: Shape
    out_shape: Shape
    anchors: np.ndarray
    classes: int
    coords: int
    num: int
    softmax: bool
    options: dict[str, str] = field(default_factory=dict)

    kind = "region"


@dataclass
class RouteLayer:
    """A darknet ``[route]`` layer: the outputs of earlier layers, concatenated in channel order.

    ``layers`` holds the absolute indices of the sources (the cfg's negative indices resolved);
    all sources have the same height and width. ``in_shape == out_shape`` is the concatenated map
    (the route reads nothing else). With one source the route is a copy of it.
    Ref: darknet src/route_layer.c ``make_route_layer``, ``forward_route_layer``.
    """

    in_shape: Shape
    out_shape: Shape
    layers: tuple[int, ...]

    kind = "route"


@dataclass
class UpsampleLayer:
    """A darknet ``[upsample]`` layer: nearest-neighbour ×``stride`` (each value fills a
    ``stride × stride`` block). Ref: darknet src/upsample_layer.c, src/blas.c ``upsample_cpu``."""

    in_shape: Shape
    out_shape: Shape
    stride: int

    kind = "upsample"


@dataclass
class YoloLayer:
    """A darknet ``[yolo]`` layer (YOLOv3 detection head).

    ``in_shape == out_shape == (len(mask) * (4 + 1 + classes), H, W)``. ``anchors`` has shape
    (num, 2): all anchors of the network, in pixels of the network input; ``mask`` selects the
    ones this head predicts (anchor ``mask[n]`` for the head's ``n``-th box). The training-only
    keys of the section are kept verbatim in ``options``.
    Ref: darknet src/yolo_layer.c ``make_yolo_layer``; src/parser.c ``parse_yolo``.
    """

    in_shape: Shape
    out_shape: Shape
    anchors: np.ndarray
    mask: tuple[int, ...]
    classes: int
    options: dict[str, str] = field(default_factory=dict)

    kind = "yolo"

    @property
    def num(self) -> int:
        """Total anchors of the network (the cfg's ``num``)."""
        return len(self.anchors)


Layer = ConvLayer | MaxpoolLayer | RegionLayer | RouteLayer | UpsampleLayer | YoloLayer


@dataclass
class Network:
    """A darknet network: ``[net]`` options and the layers in darknet index order.

    Attributes
    ----------
    input_shape : (C, H, W)
    layers : list of Layer
    options : dict
        The ``[net]`` section's keys (training hyper-parameters are kept verbatim).
    version : (major, minor, revision)
        The ``.weights`` header version; ``seen`` is the image counter stored with it.
    """

    input_shape: Shape
    layers: list[Layer]
    options: dict[str, str] = field(default_factory=dict)
    version: tuple[int, int, int] = (0, 2, 0)
    seen: int = 0

    @property
    def region(self) -> RegionLayer | None:
        """The final region layer, if the network has one."""
        last = self.layers[-1] if self.layers else None
        return last if isinstance(last, RegionLayer) else None

    @property
    def heads(self) -> list[tuple[int, RegionLayer | YoloLayer]]:
        """The detection layers (``[region]``, ``[yolo]``) as ``(index, layer)``, in order: the
        layers darknet's ``get_network_boxes`` collects boxes from."""
        return [(i, layer) for i, layer in enumerate(self.layers)
                if isinstance(layer, RegionLayer | YoloLayer)]
