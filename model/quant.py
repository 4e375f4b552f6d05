"""The quantizer: a float :class:`~model.network.Network` to a :class:`QuantizedNetwork`.

The quantized network is the one object that crosses every boundary of Owlet: the golden model,
the compiler, the cosimulation and the host driver all read its integers and never re-derive them.
Every rule applied here is written down in ``docs/fixed-point.md``; the file format written by
:meth:`QuantizedNetwork.save` is documented in ``docs/quantized-model-format.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.float_ref import fold_batchnorm, forward
from model.golden import ACC_BITS, INPUT_SCALE
from model.network import (
    ConvLayer,
    MaxpoolLayer,
    Network,
    RegionLayer,
    RouteLayer,
    UpsampleLayer,
    YoloLayer,
)

__all__ = [
    "CALIBRATION_METHODS",
    "FORMAT_VERSION",
    "QuantConv",
    "QuantMaxpool",
    "QuantRegion",
    "QuantRoute",
    "QuantUpsample",
    "QuantYolo",
    "QuantizationError",
    "QuantizedNetwork",
    "activation_threshold",
    "quantize_bias",
    "quantize_network",
    "quantize_weights",
    "requant_parameters",
    "shared_scale_groups",
]

FORMAT_VERSION = 1
MULTIPLIER_MAX = 65535  # uint16
SHIFT_MIN, SHIFT_MAX = 1, 47
LEAKY_SLOPE = 0.1
#: Calibration methods for activation scales (docs/fixed-point.md §6).
CALIBRATION_METHODS = ("max", "percentile")
PERCENTILE = 99.99
# |w_q * x_q| <= 127 * 128 for every product (weights never reach -128).
MAX_PRODUCT = 127 * 128


class QuantizationError(ValueError):
    """A layer cannot be represented within the fixed-point contract."""


Shape = tuple[int, int, int]


@dataclass
class QuantConv:
    """A convolutional layer in integers.

    Attributes
    ----------
    in_shape, out_shape : (C, H, W)
    size, stride, padding : int
    activation : ``"leaky"`` or ``"linear"``
    weight : int8 array, shape (O, C, K, K), values in [-127, 127]
    bias : int32 array, shape (O,)
    m_pos, m_neg, shift : int64 arrays, shape (O,)
        Requantization per output channel (docs/fixed-point.md §4); unused when ``output_int32``.
    in_scale : float
        Scale of the input activations.
    w_scale : float64 array, shape (O,)
        Per-output-channel weight scale.
    out_scale : float or None
        Scale of the int8 output; None when the layer writes int32 accumulators.
    output_int32 : bool
        The last layer writes its int32 accumulators (docs/fixed-point.md §7).
    """

    in_shape: Shape
    out_shape: Shape
    size: int
    stride: int
    padding: int
    activation: str
    weight: np.ndarray
    bias: np.ndarray
    m_pos: np.ndarray
    m_neg: np.ndarray
    shift: np.ndarray
    in_scale: float
    w_scale: np.ndarray
    out_scale: float | None
    output_int32: bool

    kind = "convolutional"

    @property
    def max_abs_accumulator(self) -> int:
        """Worst-case ``|acc|`` over any input: ``max|b_q| + C·K·K·127·128``."""
        c, k = self.in_shape[0], self.size
        return int(np.abs(self.bias.astype(np.int64)).max(initial=0)) + c * k * k * MAX_PRODUCT

    @property
    def accumulator_bits(self) -> int:
        """Signed bits the accumulator needs in the worst case (docs/fixed-point.md §3)."""
        return int(self.max_abs_accumulator).bit_length() + 1

    @property
    def output_scale(self) -> np.ndarray:
        """Real value of one output step per channel, shape (O,)."""
        if self.output_int32:
            return self.w_scale * self.in_scale
        return np.full(self.out_shape[0], self.out_scale)


@dataclass
class QuantMaxpool:
    """A maxpool layer on int8 (docs/fixed-point.md §5); ``scale`` is its input's and output's."""

    in_shape: Shape
    out_shape: Shape
    size: int
    stride: int
    padding: int
    scale: float

    kind = "maxpool"


@dataclass
class _HostLayer:
    """A detection layer the engine does not run: the host runs its cfg ``layer`` in float on its
    producer's dequantized output; shapes are the cfg layer's."""

    layer: RegionLayer | YoloLayer

    @property
    def in_shape(self) -> Shape:
        return self.layer.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.layer.out_shape


@dataclass
class QuantRegion(_HostLayer):
    """The region layer, run on the host in float after dequantization."""

    layer: RegionLayer

    kind = "region"


@dataclass
class QuantRoute:
    """A route on int8: its sources side by side, all on the one ``scale`` (docs/fixed-point.md
    §8); ``layers`` are the sources' absolute indices."""

    in_shape: Shape
    out_shape: Shape
    layers: tuple[int, ...]
    scale: float

    kind = "route"


@dataclass
class QuantUpsample:
    """Nearest-neighbour upsampling of int8 maps; ``scale`` is its input's and output's."""

    in_shape: Shape
    out_shape: Shape
    stride: int
    scale: float

    kind = "upsample"


@dataclass
class QuantYolo(_HostLayer):
    """A yolo layer, run on the host in float on its producer's dequantized int32 output."""

    layer: YoloLayer

    kind = "yolo"


QuantLayer = QuantConv | QuantMaxpool | QuantRegion | QuantRoute | QuantUpsample | QuantYolo


@dataclass
class QuantizedNetwork:
    """A network in integers, layers in darknet index order.

    Attributes
    ----------
    input_shape : (C, H, W)
    input_scale : float
        ``1/127`` (docs/fixed-point.md §1).
    layers : list of QuantConv, QuantMaxpool, QuantRegion, QuantRoute, QuantUpsample, QuantYolo
    calibration : dict
        How the activation scales were obtained (method, number of images, ...).
    """

    input_shape: Shape
    input_scale: float
    layers: list[QuantLayer]
    calibration: dict = field(default_factory=dict)

    def check_matches(self, net: Network, source: str | Path, cfg: str | Path) -> None:
        """Refuse to run this quantized model (read from ``source``) as the network ``net``
        (parsed from ``cfg``) unless both describe the same layers.

        They must agree on the input shape and, layer by layer, on the kind, the input and output
        shapes and the geometry (size, stride, padding, activation; a region or yolo layer's
        classes, coords, num, softmax, mask and anchors; a route's sources). Weights and scales
        are not compared: a model quantized from other weights of the same cfg is legitimate.

        Raises
        ------
        QuantizationError
            Naming both files, the first layer that differs and what each file says of it.
        """
        ours = [_shape_text(self.input_shape)] + [_describe(layer) for layer in self.layers]
        theirs = [_shape_text(net.input_shape)] + [_describe(layer) for layer in net.layers]
        for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            if a != b:
                where = "the input" if index == 0 else f"layer {index - 1}"
                raise QuantizationError(f"{source} does not match {cfg}: {where} is {a} in the "
                                        f"quantized model, {b} in the cfg")
        if len(ours) != len(theirs):
            raise QuantizationError(f"{source} does not match {cfg}: the quantized model has "
                                    f"{len(self.layers)} layers, the cfg {len(net.layers)}")

    def save(self, path: str | Path) -> None:
        """Write the documented ``.npz`` quantized model file (docs/quantized-model-format.md)."""
        arrays: dict[str, np.ndarray] = {}
        meta_layers = []
        for index, layer in enumerate(self.layers):
            entry: dict = {"kind": layer.kind}
            if isinstance(layer, QuantConv):
                entry.update(
                    in_shape=layer.in_shape, out_shape=layer.out_shape, size=layer.size,
                    stride=layer.stride, padding=layer.padding, activation=layer.activation,
                    in_scale=layer.in_scale, out_scale=layer.out_scale,
                    output_int32=layer.output_int32,
                )
                for name in ("weight", "bias", "m_pos", "m_neg", "shift", "w_scale"):
                    arrays[f"layer{index:02d}_{name}"] = getattr(layer, name)
            elif isinstance(layer, QuantMaxpool):
                entry.update(
                    in_shape=layer.in_shape, out_shape=layer.out_shape, size=layer.size,
                    stride=layer.stride, padding=layer.padding, scale=layer.scale,
                )
            elif isinstance(layer, QuantRoute):
                entry.update(in_shape=layer.in_shape, out_shape=layer.out_shape,
                             layers=layer.layers, scale=layer.scale)
            elif isinstance(layer, QuantUpsample):
                entry.update(in_shape=layer.in_shape, out_shape=layer.out_shape,
                             stride=layer.stride, scale=layer.scale)
            elif isinstance(layer, QuantYolo):
                yolo = layer.layer
                entry.update(in_shape=yolo.in_shape, mask=yolo.mask, classes=yolo.classes,
                             options=yolo.options)
                arrays[f"layer{index:02d}_anchors"] = yolo.anchors
            else:
                region = layer.layer
                entry.update(
                    in_shape=region.in_shape, classes=region.classes, coords=region.coords,
                    num=region.num, softmax=region.softmax, options=region.options,
                )
                arrays[f"layer{index:02d}_anchors"] = region.anchors
            meta_layers.append(entry)
        meta = {
            "format": "owlet-quantized-model",
            "version": FORMAT_VERSION,
            "input_shape": self.input_shape,
            "input_scale": self.input_scale,
            "calibration": self.calibration,
            "layers": meta_layers,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> QuantizedNetwork:
        """Read a file written by :meth:`save`; a foreign or damaged file is a clear error."""
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(data["meta"].tobytes().decode())
        except (OSError, ValueError, KeyError) as exc:
            raise QuantizationError(f"{path}: not an Owlet quantized model file ({exc})") from exc
        if meta.get("format") != "owlet-quantized-model":
            raise QuantizationError(f"{path}: not an Owlet quantized model file")
        if meta.get("version") != FORMAT_VERSION:
            raise QuantizationError(
                f"{path}: format version {meta.get('version')}, this Owlet reads {FORMAT_VERSION}"
            )
        layers: list[QuantLayer] = []
        for index, entry in enumerate(meta["layers"]):
            def array(name, index=index):
                key = f"layer{index:02d}_{name}"
                if key not in data:
                    raise QuantizationError(f"{path}: layer {index} lacks array '{name}'")
                return data[key]

            shapes = {k: tuple(entry[k]) for k in ("in_shape", "out_shape") if k in entry}
            if entry["kind"] == "convolutional":
                layers.append(QuantConv(
                    **shapes, size=entry["size"], stride=entry["stride"],
                    padding=entry["padding"], activation=entry["activation"],
                    weight=array("weight"), bias=array("bias"), m_pos=array("m_pos"),
                    m_neg=array("m_neg"), shift=array("shift"), in_scale=entry["in_scale"],
                    w_scale=array("w_scale"), out_scale=entry["out_scale"],
                    output_int32=entry["output_int32"],
                ))
            elif entry["kind"] == "maxpool":
                layers.append(QuantMaxpool(
                    **shapes, size=entry["size"], stride=entry["stride"],
                    padding=entry["padding"], scale=entry["scale"],
                ))
            elif entry["kind"] == "region":
                shape = tuple(entry["in_shape"])
                layers.append(QuantRegion(RegionLayer(
                    in_shape=shape, out_shape=shape, anchors=array("anchors"),
                    classes=entry["classes"], coords=entry["coords"], num=entry["num"],
                    softmax=entry["softmax"], options=entry["options"],
                )))
            elif entry["kind"] == "route":
                layers.append(QuantRoute(**shapes, layers=tuple(entry["layers"]),
                                         scale=entry["scale"]))
            elif entry["kind"] == "upsample":
                layers.append(QuantUpsample(**shapes, stride=entry["stride"],
                                            scale=entry["scale"]))
            elif entry["kind"] == "yolo":
                shape = tuple(entry["in_shape"])
                layers.append(QuantYolo(YoloLayer(
                    in_shape=shape, out_shape=shape, anchors=array("anchors"),
                    mask=tuple(entry["mask"]), classes=entry["classes"],
                    options=entry["options"],
                )))
            else:
                raise QuantizationError(f"{path}: layer {index} has unknown kind {entry['kind']}")
        return cls(
            input_shape=tuple(meta["input_shape"]), input_scale=meta["input_scale"],
            layers=layers, calibration=meta["calibration"],
        )


# What a quantized layer and its cfg layer must agree on besides kind and shapes (those of the
# attributes a layer kind has).
_GEOMETRY = ("size", "stride", "padding", "activation", "classes", "coords", "num", "softmax",
             "mask", "layers")


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def _describe(layer) -> str:
    """A cfg layer or a quantized layer as ``kind in -> out key=value ...`` (see
    :meth:`QuantizedNetwork.check_matches`)."""
    layer = getattr(layer, "layer", layer)  # QuantRegion and QuantYolo wrap their cfg layer
    text = f"{layer.kind} {_shape_text(layer.in_shape)} -> {_shape_text(layer.out_shape)}"
    text += "".join(f" {key}={getattr(layer, key)}" for key in _GEOMETRY if hasattr(layer, key))
    if getattr(layer, "anchors", None) is not None:
        text += f" anchors={np.asarray(layer.anchors).ravel().tolist()}"
    return text


def quantize_weights(w_folded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights (docs/fixed-point.md §2).

    Parameters
    ----------
    w_folded : float array, shape (O, C, K, K)

    Returns
    -------
    w_q : int8 array, shape (O, C, K, K), values in [-127, 127]
    w_scale : float64 array, shape (O,): ``max|w[o]| / 127`` (1.0 for an all-zero channel)
    """
    w = np.asarray(w_folded, dtype=np.float64)
    peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    w_scale = np.where(peak > 0, peak / 127.0, 1.0)
    w_q = np.clip(np.rint(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    return w_q, w_scale


def quantize_bias(b_folded: np.ndarray, w_scale: np.ndarray, in_scale: float) -> np.ndarray:
    """``rint(b / (s_w · s_x))`` as int64, shape (O,) (docs/fixed-point.md §3)."""
    return np.rint(np.asarray(b_folded, np.float64) / (w_scale * in_scale)).astype(np.int64)


def requant_parameters(
    real_multiplier: np.ndarray, activation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer multipliers and shifts for ``r = s_w · s_x / s_y`` (docs/fixed-point.md §4).

    Parameters
    ----------
    real_multiplier : float64 array, shape (O,), positive
    activation : ``"leaky"`` or ``"linear"``

    Returns
    -------
    m_pos, m_neg, shift : int64 arrays, shape (O,)
        ``shift`` is the largest in [1, 47] with ``rint(r · 2**shift) <= 65535``.

    Raises
    ------
    QuantizationError
        If some ``r`` is so large that even ``shift = 1`` overflows 16 bits.
    """
    r = np.asarray(real_multiplier, dtype=np.float64)
    if np.any(r <= 0) or not np.all(np.isfinite(r)):
        raise QuantizationError(f"requantization multipliers must be positive and finite: {r}")
    shift = np.clip(np.floor(np.log2(MULTIPLIER_MAX / r)), SHIFT_MIN, SHIFT_MAX).astype(np.int64)
    # log2 is rounded: step down where rint(r * 2**shift) still overflows 16 bits.
    shift -= (np.rint(np.ldexp(r, shift)) > MULTIPLIER_MAX).astype(np.int64)
    if np.any(shift < SHIFT_MIN):
        bad = int(np.argmax(shift < SHIFT_MIN))
        raise QuantizationError(
            f"output channel {bad}: requantization multiplier {r[bad]:.6g} needs a shift below "
            f"{SHIFT_MIN} to fit 16 bits"
        )
    m_pos = np.rint(np.ldexp(r, shift)).astype(np.int64)
    if activation == "leaky":
        m_neg = np.rint(np.ldexp(LEAKY_SLOPE * r, shift)).astype(np.int64)
    elif activation == "linear":
        m_neg = m_pos.copy()
    else:
        raise QuantizationError(f"activation '{activation}' is not in the fixed-point contract")
    return m_pos, m_neg, shift


def activation_threshold(samples: list[np.ndarray], method: str) -> float:
    """The real value that maps to int8 127 for a tensor seen in ``samples``.

    Parameters
    ----------
    samples : list of float arrays (any shape), the tensor over the calibration images
    method : ``"max"`` (largest ``|y|``) or ``"percentile"`` (99.99th percentile of ``|y|``)
    """
    values = np.abs(np.concatenate([np.ravel(s) for s in samples]))
    if method == "max":
        threshold = float(values.max())
    elif method == "percentile":
        threshold = float(np.percentile(values, PERCENTILE))
    else:
        raise ValueError(f"calibration method '{method}' is not one of {CALIBRATION_METHODS}")
    # An all-zero tensor can take any scale; 1.0 keeps every multiplier finite.
    return threshold if threshold > 0 else 127.0


def shared_scale_groups(net: Network) -> list[set[int]]:
    """The convolutions whose int8 outputs must share one scale because a route concatenates them
    (docs/fixed-point.md §8).

    A layer's scale is set by the convolution that requantized it: a maxpool, an upsample or a
    route passes its source's on. A route's sources, traced back that way, form one group.

    Returns
    -------
    list of sets of conv layer indices, each with at least two members, in order of first member

    Raises
    ------
    QuantizationError
        A route concatenates something that is not an int8 map of a convolution (the network
        input, whose scale is fixed, or a head's or an int32 output); the message names the route.
    """
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    source: list[int | None] = []  # per layer: the conv setting its scale; -1 the input
    for index, layer in enumerate(net.layers):
        if isinstance(layer, ConvLayer):
            source.append(index)
        elif isinstance(layer, MaxpoolLayer | UpsampleLayer):
            source.append(source[index - 1] if index else -1)
        elif isinstance(layer, RouteLayer):
            roots = [source[i] for i in layer.layers]
            if any(r is None or r < 0 for r in roots):
                raise QuantizationError(
                    f"layer {index}: route of layers {list(layer.layers)} reaches the network "
                    "input or a detection head: only convolutions' int8 maps can be concatenated"
                )
            for r in roots[1:]:
                parent[find(r)] = find(roots[0])
            source.append(roots[0])
        else:
            source.append(None)
    groups: dict[int, set[int]] = {}
    for conv in parent:
        groups.setdefault(find(conv), set()).add(conv)
    return sorted((g for g in groups.values() if len(g) > 1), key=min)


def _int32_producers(net: Network) -> set[int]:
    """The convolutions that write int32 (docs/fixed-point.md §7): each head's producer, or the
    last convolution of a network without heads."""
    producers = {index - 1 for index, _ in net.heads}
    if not producers:
        return {max(i for i, layer in enumerate(net.layers) if isinstance(layer, ConvLayer))}
    for index in producers:
        if index < 0 or not isinstance(net.layers[index], ConvLayer):
            raise QuantizationError(f"layer {index + 1}: a detection head must follow a "
                                    "convolution (its int32 accumulators leave the engine)")
    return producers


def quantize_network(
    net: Network,
    calibration_inputs: list[np.ndarray] = (),
    method: str = "max",
    thresholds: dict[int, float] | None = None,
) -> QuantizedNetwork:
    """Quantize ``net`` with activation scales calibrated on letterboxed inputs, or given.

    Parameters
    ----------
    net : Network
        Weights loaded. Convolutions are leaky or linear; detection heads are region or yolo
        layers, each right after its convolution.
    calibration_inputs : list of float32 arrays, each shape ``net.input_shape``, values in [0, 1]
    method : one of ``CALIBRATION_METHODS``
    thresholds : dict, optional
        ``{conv layer index: T}``, the real value that maps to int8 127 at that layer's output
        (``s_y = T / 127``), for every convolution but the int32 ones. Given (as
        quantization-aware training learns them), no calibration pass runs and
        ``calibration_inputs`` is unused. Convolutions a route concatenates take the largest
        ``T`` of their group (:func:`shared_scale_groups`).

    Returns
    -------
    QuantizedNetwork
        The convolution feeding each head (or, without heads, the last one) writes int32.

    Raises
    ------
    QuantizationError
        A layer's multipliers or accumulator do not fit the contract; the message names the layer.
    """
    if thresholds is None:
        if not calibration_inputs:
            raise QuantizationError("calibration needs at least one image")
        activations = [forward(net, x) for x in calibration_inputs]
        thresholds = {
            index: activation_threshold([a[index] for a in activations], method)
            for index, layer in enumerate(net.layers) if isinstance(layer, ConvLayer)
        }
        calibration = {"method": method, "images": len(calibration_inputs)}
    else:
        calibration = {"method": "given thresholds"}
    int32 = _int32_producers(net)
    thresholds = dict(thresholds)
    for group in shared_scale_groups(net):
        if group & int32:
            raise QuantizationError(f"layers {sorted(group & int32)}: a route reads the int32 "
                                    "output of a head's convolution")
        shared = max(thresholds[i] for i in group)  # the concatenated map's largest value
        thresholds.update(dict.fromkeys(group, shared))
    scales: list[float | None] = []  # each layer's output scale; None: int32 or host float
    layers: list[QuantLayer] = []
    for index, layer in enumerate(net.layers):
        in_scale = scales[index - 1] if index else INPUT_SCALE
        if in_scale is None and not isinstance(layer, RegionLayer | YoloLayer | RouteLayer):
            raise QuantizationError(f"layer {index}: reads the int32 or host output of layer "
                                    f"{index - 1}")
        if isinstance(layer, ConvLayer):
            out_scale = None if index in int32 else thresholds[index] / 127.0
            layers.append(_quantize_conv(index, layer, in_scale, out_scale))
        elif isinstance(layer, MaxpoolLayer):
            out_scale = in_scale
            layers.append(QuantMaxpool(layer.in_shape, layer.out_shape, layer.size, layer.stride,
                                       layer.padding, out_scale))
        elif isinstance(layer, UpsampleLayer):
            out_scale = in_scale
            layers.append(QuantUpsample(layer.in_shape, layer.out_shape, layer.stride, out_scale))
        elif isinstance(layer, RouteLayer):
            out_scale = scales[layer.layers[0]]  # equal for all sources, by the groups above
            layers.append(QuantRoute(layer.in_shape, layer.out_shape, layer.layers, out_scale))
        elif isinstance(layer, RegionLayer | YoloLayer):
            out_scale = None
            layers.append(QuantRegion(layer) if isinstance(layer, RegionLayer)
                          else QuantYolo(layer))
        else:
            raise QuantizationError(f"layer {index}: no quantized form for {type(layer).__name__}")
        scales.append(out_scale)
    return QuantizedNetwork(net.input_shape, INPUT_SCALE, layers, calibration)


def _quantize_conv(index, layer, in_scale, out_scale) -> QuantConv:
    """One convolution; ``out_scale`` None makes it the int32 last layer."""
    w_folded, b_folded = fold_batchnorm(layer)
    w_q, w_scale = quantize_weights(w_folded)
    bias = quantize_bias(b_folded, w_scale, in_scale)
    if out_scale is None:
        m_pos, m_neg, shift = (np.zeros(layer.filters, np.int64) for _ in range(3))
    else:
        try:
            m_pos, m_neg, shift = requant_parameters(w_scale * in_scale / out_scale,
                                                     layer.activation)
        except QuantizationError as exc:
            raise QuantizationError(f"layer {index}: {exc}") from exc
    qconv = QuantConv(
        in_shape=layer.in_shape, out_shape=layer.out_shape, size=layer.size, stride=layer.stride,
        padding=layer.padding, activation=layer.activation, weight=w_q,
        bias=bias.astype(np.int32) if np.abs(bias).max(initial=0) < 2**31 else bias,
        m_pos=m_pos, m_neg=m_neg, shift=shift, in_scale=in_scale, w_scale=w_scale,
        out_scale=out_scale, output_int32=out_scale is None,
    )
    if qconv.accumulator_bits > ACC_BITS:
        raise QuantizationError(
            f"layer {index}: worst-case accumulator needs {qconv.accumulator_bits} bits "
            f"(max |bias| {int(np.abs(bias).max())}), the engine has {ACC_BITS}"
        )
    return qconv
