"""Darknet ``.cfg`` / ``.weights`` reading and writing.

The subset of darknet Owlet supports is tiny-YOLOv2 and YOLOv3-tiny: ``[net]``,
``[convolutional]`` (leaky or linear, with or without batch norm), ``[maxpool]``, ``[region]``,
``[route]``, ``[upsample]`` and ``[yolo]``. Anything else -- an unknown
section, an unknown key, an unsupported value -- is a :class:`DarknetFormatError` naming the file
and the line, instead of darknet's habit of warning and carrying on with a default.

Ref: darknet src/parser.c (``read_cfg``, ``parse_network_cfg``, ``parse_convolutional``,
``parse_maxpool``, ``parse_region``, ``parse_route``, ``parse_upsample``, ``parse_yolo``,
``load_weights_upto``, ``save_weights_upto``).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from model.network import (
    ConvLayer,
    Layer,
    MaxpoolLayer,
    Network,
    RegionLayer,
    RouteLayer,
    UpsampleLayer,
    YoloLayer,
    conv_output_hw,
    maxpool_output_hw,
)

__all__ = [
    "DarknetFormatError",
    "load_darknet",
    "load_weights",
    "parse_cfg",
    "save_weights",
    "write_cfg",
]

PathLike = str | os.PathLike

# Section aliases darknet accepts (Ref: darknet src/parser.c ``string_to_layer_type``).
_SECTION_KINDS = {
    "net": "net",
    "network": "net",
    "convolutional": "convolutional",
    "conv": "convolutional",
    "maxpool": "maxpool",
    "max": "maxpool",
    "region": "region",
    "route": "route",
    "upsample": "upsample",
    "yolo": "yolo",
}

# Every key darknet's ``parse_net_options`` reads; all are training or input options that Owlet
# keeps verbatim. ``inputs`` is left out on purpose: Owlet requires width, height and channels.
_NET_KEYS = frozenset(
    "batch subdivisions width height channels learning_rate momentum decay time_steps notruth "
    "random adam B1 B2 eps max_crop min_crop max_ratio min_ratio center clip angle aspect "
    "saturation exposure hue policy burn_in power step scale steps scales gamma "
    "max_batches".split()
)
_CONV_KEYS = frozenset("filters size stride pad padding activation batch_normalize".split())
_MAXPOOL_KEYS = frozenset("size stride padding".split())
# Keys that only matter to darknet's training loss; kept verbatim in ``RegionLayer.options``.
_REGION_TRAINING_KEYS = frozenset(
    "jitter rescore object_scale noobject_scale class_scale coord_scale mask_scale thresh random "
    "bias_match absolute classfix log sqrt max".split()
)
_REGION_KEYS = frozenset("anchors classes coords num softmax".split()) | _REGION_TRAINING_KEYS
_ROUTE_KEYS = frozenset(["layers"])
_UPSAMPLE_KEYS = frozenset(["stride"])
# Keys that only matter to darknet's yolo training loss; kept verbatim in ``YoloLayer.options``.
_YOLO_TRAINING_KEYS = frozenset("jitter ignore_thresh truth_thresh random max".split())
_YOLO_KEYS = frozenset("mask anchors classes num".split()) | _YOLO_TRAINING_KEYS
_ACTIVATIONS = ("leaky", "linear")


class DarknetFormatError(ValueError):
    """A darknet ``.cfg`` or ``.weights`` file Owlet cannot read; the message names the file and
    the line (cfg) or the layer and byte counts (weights)."""


@dataclass
class _Section:
    """One cfg section: its kind, where it starts, and its ``key -> (value, line)`` entries."""

    kind: str
    path: str
    lineno: int
    entries: dict[str, tuple[str, int]] = field(default_factory=dict)

    def error(self, message: str, key: str | None = None) -> DarknetFormatError:
        line = self.entries[key][1] if key in self.entries else self.lineno
        return DarknetFormatError(f"{self.path}:{line}: [{self.kind}] {message}")

    def check_keys(self, allowed: frozenset[str]) -> None:
        for key, (_, line) in self.entries.items():
            if key not in allowed:
                raise DarknetFormatError(
                    f"{self.path}:{line}: unknown key '{key}' in [{self.kind}] "
                    f"(Owlet accepts: {', '.join(sorted(allowed))})"
                )

    def get_int(self, key: str, default: int | None) -> int:
        if key not in self.entries:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        value = self.entries[key][0]
        try:
            return int(value)
        except ValueError:
            raise self.error(f"'{key}' must be an integer, got '{value}'", key) from None

    def get_str(self, key: str, default: str) -> str:
        return self.entries[key][0] if key in self.entries else default

    def get_list(self, key: str, kind: type) -> list:
        """A comma-separated list of ``kind`` (int or float)."""
        text = self.entries[key][0]
        try:
            return [kind(item) for item in text.split(",")]
        except ValueError:
            noun = "integers" if kind is int else "numbers"
            raise self.error(f"{key} must be comma-separated {noun}, got '{text}'", key) from None

    def get_anchors(self, num: int) -> np.ndarray:
        """``anchors`` as a float32 (num, 2) array; darknet's default is 0.5 everywhere."""
        if "anchors" not in self.entries:
            return np.full((num, 2), 0.5, np.float32)
        values = self.get_list("anchors", float)
        if len(values) != 2 * num:
            message = f"{len(values)} anchor values for num={num}, expected {2 * num}"
            raise self.error(message, "anchors")
        return np.array(values, dtype=np.float32).reshape(num, 2)


def _read_sections(path: PathLike) -> list[_Section]:
    """Split a cfg file into sections, as darknet's ``read_cfg`` does.

    Like darknet's ``strip``, all blanks are removed from a line before it is interpreted (so
    ``thresh = .6`` is the key ``thresh`` with value ``.6``); ``#`` and ``;`` start comment lines.
    """
    spath = os.fspath(path)
    try:
        with open(spath, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DarknetFormatError(f"{spath}: not a text cfg file ({e})") from None
    sections: list[_Section] = []
    for lineno, raw in enumerate(lines, start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            name = line[1:-1] if line.endswith("]") else None
            if name not in _SECTION_KINDS:
                raise DarknetFormatError(
                    f"{spath}:{lineno}: unknown section {line} (Owlet accepts [net], "
                    f"[convolutional], [maxpool], [region], [route], [upsample], [yolo])"
                )
            sections.append(_Section(_SECTION_KINDS[name], spath, lineno))
            continue
        key, eq, value = line.partition("=")
        if not eq or not key or not value:
            raise DarknetFormatError(f"{spath}:{lineno}: expected 'key=value', got '{raw.strip()}'")
        if not sections:
            raise DarknetFormatError(f"{spath}:{lineno}: option '{key}' before the first section")
        section = sections[-1]
        if key in section.entries:
            raise DarknetFormatError(
                f"{spath}:{lineno}: duplicate key '{key}' in [{section.kind}] "
                f"(first at line {section.entries[key][1]})"
            )
        section.entries[key] = (value, lineno)
    return sections


def _parse_conv(s: _Section, in_shape: tuple[int, int, int]) -> ConvLayer:
    # Ref: darknet src/parser.c ``parse_convolutional``.
    s.check_keys(_CONV_KEYS)
    filters = s.get_int("filters", 1)
    size = s.get_int("size", 1)
    stride = s.get_int("stride", 1)
    padding = s.get_int("padding", 0)
    if s.get_int("pad", 0):
        padding = size // 2  # darknet: ``pad`` overrides ``padding``
    batch_normalize = bool(s.get_int("batch_normalize", 0))
    activation = s.get_str("activation", "logistic")  # darknet's default, which Owlet rejects
    if activation not in _ACTIVATIONS:
        raise s.error(
            f"unsupported activation '{activation}' (Owlet supports {', '.join(_ACTIVATIONS)})",
            "activation",
        )
    if filters < 1 or size < 1 or stride < 1 or padding < 0:
        raise s.error(f"bad geometry filters={filters} size={size} stride={stride} pad={padding}")
    c, h, w = in_shape
    out_h, out_w = conv_output_hw(h, w, size, stride, padding)
    if out_h < 1 or out_w < 1:
        raise s.error(f"output is empty for input {in_shape}")
    bn = (lambda: np.zeros(filters, np.float32)) if batch_normalize else (lambda: None)
    return ConvLayer(
        in_shape=in_shape,
        out_shape=(filters, out_h, out_w),
        filters=filters,
        size=size,
        stride=stride,
        padding=padding,
        batch_normalize=batch_normalize,
        activation=activation,
        weights=np.zeros((filters, c, size, size), np.float32),
        biases=np.zeros(filters, np.float32),
        scales=bn(),
        rolling_mean=bn(),
        rolling_variance=bn(),
    )


def _parse_maxpool(s: _Section, in_shape: tuple[int, int, int]) -> MaxpoolLayer:
    # Ref: darknet src/parser.c ``parse_maxpool`` (size defaults to stride, padding to size - 1).
    s.check_keys(_MAXPOOL_KEYS)
    stride = s.get_int("stride", 1)
    size = s.get_int("size", stride)
    padding = s.get_int("padding", size - 1)
    if size < 1 or stride < 1 or padding < 0:
        raise s.error(f"bad geometry size={size} stride={stride} padding={padding}")
    c, h, w = in_shape
    out_h, out_w = maxpool_output_hw(h, w, size, stride, padding)
    if out_h < 1 or out_w < 1:
        raise s.error(f"output is empty for input {in_shape}")
    return MaxpoolLayer(in_shape, (c, out_h, out_w), size, stride, padding)


def _parse_region(s: _Section, in_shape: tuple[int, int, int]) -> RegionLayer:
    # Ref: darknet src/parser.c ``parse_region`` and src/region_layer.c ``make_region_layer``.
    s.check_keys(_REGION_KEYS)
    classes = s.get_int("classes", 20)
    coords = s.get_int("coords", 4)
    num = s.get_int("num", 1)
    softmax = bool(s.get_int("softmax", 0))
    if coords != 4:
        raise s.error(f"coords={coords} is not supported (Owlet decodes 4 box coordinates)")
    if classes < 1 or num < 1:
        raise s.error(f"bad classes={classes} num={num}")
    if in_shape[0] != num * (coords + 1 + classes):
        raise s.error(
            f"input has {in_shape[0]} channels, expected num*(coords+1+classes) = "
            f"{num * (coords + 1 + classes)}"
        )
    anchors = s.get_anchors(num)
    options = {k: v for k, (v, _) in s.entries.items() if k in _REGION_TRAINING_KEYS}
    return RegionLayer(
        in_shape=in_shape,
        out_shape=in_shape,
        anchors=anchors,
        classes=classes,
        coords=coords,
        num=num,
        softmax=softmax,
        options=options,
    )


def _parse_route(s: _Section, layers: list[Layer]) -> RouteLayer:
    # Ref: darknet src/parser.c ``parse_route``: a negative index counts back from this layer.
    s.check_keys(_ROUTE_KEYS)
    if "layers" not in s.entries:
        raise s.error("missing required key 'layers'")
    here = len(layers)
    sources = []
    for index in s.get_list("layers", int):
        source = here + index if index < 0 else index
        if not 0 <= source < here:
            raise s.error(f"layers={index} refers to layer {source}, but route {here} can only "
                          f"use layers 0..{here - 1}", "layers")
        sources.append(source)
    shapes = [layers[i].out_shape for i in sources]
    if any(shape[1:] != shapes[0][1:] for shape in shapes):
        listing = ", ".join(f"layer {i} {'x'.join(map(str, shape))}"
                            for i, shape in zip(sources, shapes, strict=True))
        raise s.error(f"cannot concatenate maps of different sizes: {listing}", "layers")
    out_shape = (sum(shape[0] for shape in shapes), *shapes[0][1:])
    return RouteLayer(out_shape, out_shape, tuple(sources))


def _parse_upsample(s: _Section, in_shape: tuple[int, int, int]) -> UpsampleLayer:
    # Ref: darknet src/parser.c ``parse_upsample`` (stride defaults to 2; Owlet has no
    # negative, i.e. downsampling, stride).
    s.check_keys(_UPSAMPLE_KEYS)
    stride = s.get_int("stride", 2)
    if stride < 1:
        raise s.error(f"stride must be a positive integer, got {stride}", "stride")
    c, h, w = in_shape
    return UpsampleLayer(in_shape, (c, h * stride, w * stride), stride)


def _parse_yolo(s: _Section, in_shape: tuple[int, int, int]) -> YoloLayer:
    # Ref: darknet src/parser.c ``parse_yolo``, ``parse_yolo_mask``; src/yolo_layer.c
    # ``make_yolo_layer`` (no mask: the head predicts all ``num`` anchors).
    s.check_keys(_YOLO_KEYS)
    classes = s.get_int("classes", 20)
    num = s.get_int("num", 1)
    if classes < 1 or num < 1:
        raise s.error(f"bad classes={classes} num={num}")
    mask = tuple(s.get_list("mask", int)) if "mask" in s.entries else tuple(range(num))
    if any(not 0 <= m < num for m in mask):
        raise s.error(f"mask {','.join(map(str, mask))} selects anchors outside 0..{num - 1}",
                      "mask")
    if in_shape[0] != len(mask) * (4 + 1 + classes):
        raise s.error(
            f"input has {in_shape[0]} channels, expected len(mask)*(4+1+classes) = "
            f"{len(mask) * (4 + 1 + classes)}"
        )
    options = {k: v for k, (v, _) in s.entries.items() if k in _YOLO_TRAINING_KEYS}
    return YoloLayer(in_shape, in_shape, s.get_anchors(num), mask, classes, options)


_PARSERS = {
    "convolutional": _parse_conv,
    "maxpool": _parse_maxpool,
    "region": _parse_region,
    "upsample": _parse_upsample,
    "yolo": _parse_yolo,
}


def parse_cfg(path: PathLike) -> Network:
    """Read a darknet ``.cfg`` into a :class:`~model.network.Network` with zeroed parameters.

    Parameters
    ----------
    path : str or PathLike
        The cfg file. The first section must be ``[net]`` (or ``[network]``) with ``width``,
        ``height`` and ``channels``; every other section is ``[convolutional]``, ``[maxpool]``,
        ``[region]``, ``[route]``, ``[upsample]`` or ``[yolo]``.

    Returns
    -------
    Network
        ``layers[i]`` is darknet layer ``i``; every shape is computed, every parameter array is
        zero (float32, shapes as documented on the layer classes). ``options`` holds the ``[net]``
        keys verbatim (blanks removed, as darknet's ``strip`` does).

    Raises
    ------
    DarknetFormatError
        On an unknown section or key, a malformed line, a bad value or inconsistent shapes; the
        message starts with ``file:line:``.
    """
    sections = _read_sections(path)
    spath = os.fspath(path)
    if not sections or sections[0].kind != "net":
        line = sections[0].lineno if sections else 1
        raise DarknetFormatError(f"{spath}:{line}: the first section must be [net]")
    net_section = sections[0]
    net_section.check_keys(_NET_KEYS)
    input_shape = tuple(net_section.get_int(k, None) for k in ("channels", "height", "width"))
    if min(input_shape) < 1:
        raise net_section.error(f"bad input shape (C, H, W) = {input_shape}")
    layers: list[Layer] = []
    shape = input_shape
    for s in sections[1:]:
        if s.kind == "net":
            raise s.error("only the first section may be [net]")
        if s.kind == "route":
            layer = _parse_route(s, layers)  # reads earlier layers, not just the previous one
        else:
            layer = _PARSERS[s.kind](s, shape)
        layers.append(layer)
        shape = layer.out_shape
    options = {k: v for k, (v, _) in net_section.entries.items()}
    return Network(input_shape=input_shape, layers=layers, options=options)


def _format_float(x: float) -> str:
    """Shortest decimal that reads back to the same float32."""
    return np.format_float_positional(np.float32(x), unique=True, trim="-")


def _format_anchors(anchors: np.ndarray) -> str:
    return ", ".join(f"{_format_float(aw)},{_format_float(ah)}" for aw, ah in anchors)


def write_cfg(net: Network, path: PathLike) -> None:
    """Write ``net``'s structure as a darknet ``.cfg`` that :func:`parse_cfg` reads back equal.

    ``width``, ``height`` and ``channels`` come from ``net.input_shape`` (overriding any stale
    values in ``net.options``); the other ``[net]`` options and the region's and yolo layers'
    training options are written verbatim; route sources as absolute indices. Parameters are not
    written (see :func:`save_weights`).
    """
    c, h, w = net.input_shape
    out = ["[net]", f"width={w}", f"height={h}", f"channels={c}"]
    out += [f"{k}={v}" for k, v in net.options.items() if k not in ("width", "height", "channels")]
    for layer in net.layers:
        out.append("")
        if isinstance(layer, ConvLayer):
            out.append("[convolutional]")
            if layer.batch_normalize:
                out.append("batch_normalize=1")
            out += [f"filters={layer.filters}", f"size={layer.size}", f"stride={layer.stride}"]
            if layer.padding == layer.size // 2:
                out.append("pad=1")
            else:
                out.append(f"padding={layer.padding}")
            out.append(f"activation={layer.activation}")
        elif isinstance(layer, MaxpoolLayer):
            out += ["[maxpool]", f"size={layer.size}", f"stride={layer.stride}"]
            if layer.padding != layer.size - 1:
                out.append(f"padding={layer.padding}")
        elif isinstance(layer, RegionLayer):
            out += [
                "[region]",
                f"anchors={_format_anchors(layer.anchors)}",
                f"classes={layer.classes}",
                f"coords={layer.coords}",
                f"num={layer.num}",
                f"softmax={int(layer.softmax)}",
            ]
            out += [f"{k}={v}" for k, v in layer.options.items()]
        elif isinstance(layer, RouteLayer):
            out += ["[route]", f"layers={','.join(map(str, layer.layers))}"]
        elif isinstance(layer, UpsampleLayer):
            out += ["[upsample]", f"stride={layer.stride}"]
        elif isinstance(layer, YoloLayer):
            out += [
                "[yolo]",
                f"mask={','.join(map(str, layer.mask))}",
                f"anchors={_format_anchors(layer.anchors)}",
                f"classes={layer.classes}",
                f"num={layer.num}",
            ]
            out += [f"{k}={v}" for k, v in layer.options.items()]
        else:
            raise TypeError(f"cannot write layer of type {type(layer).__name__}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def _seen_format(version: tuple[int, int, int]) -> str:
    """``struct`` code of the ``seen`` counter for a weights header ``version``.

    Ref: darknet src/parser.c ``load_weights_upto``: a ``size_t`` when
    ``major*10 + minor >= 2`` (and both < 1000), else an ``int``.
    """
    major, minor, _ = version
    return "<Q" if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else "<I"


def _conv_arrays(layer: ConvLayer) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a conv layer's parameter blocks, in darknet's file order.

    Ref: darknet src/parser.c ``load_convolutional_weights``: biases, then (with batch norm)
    scales, rolling_mean, rolling_variance, then the OIHW weights.
    """
    n = layer.filters
    blocks = [("biases", (n,))]
    if layer.batch_normalize:
        blocks += [("scales", (n,)), ("rolling_mean", (n,)), ("rolling_variance", (n,))]
    blocks.append(("weights", (n, layer.in_shape[0], layer.size, layer.size)))
    return blocks


def _conv_nbytes(layer: ConvLayer) -> int:
    return 4 * sum(int(np.prod(shape)) for _, shape in _conv_arrays(layer))


def load_weights(net: Network, path: PathLike) -> Network:
    """Fill ``net``'s conv parameters from a darknet ``.weights`` file, in place.

    Parameters
    ----------
    net : Network
        As returned by :func:`parse_cfg`; its shapes decide how many bytes each layer takes.
    path : str or PathLike
        Header ``int32 major, minor, revision``, then ``seen`` (uint64 or uint32, see
        ``load_weights_upto``), then per conv layer in order the float32 little-endian blocks of
        :func:`_conv_arrays`.

    Returns
    -------
    Network
        ``net`` itself, with ``version`` and ``seen`` set and every conv array replaced by a float32
        array of the documented shape.

    Raises
    ------
    DarknetFormatError
        If the file is shorter or longer than ``net`` needs; the message names the file, the layer
        index and the expected and actual byte counts. ``net`` is then left untouched: every
        array is read before any is replaced.
    """
    spath = os.fspath(path)
    with open(spath, "rb") as f:
        data = f.read()
    convs = [(i, layer) for i, layer in enumerate(net.layers) if isinstance(layer, ConvLayer)]
    if len(data) < 12:
        raise DarknetFormatError(
            f"{spath}: truncated header: expected at least 12 bytes, file has {len(data)}"
        )
    version = struct.unpack_from("<3i", data, 0)
    seen_fmt = _seen_format(version)
    header = 12 + struct.calcsize(seen_fmt)
    expected_total = header + sum(_conv_nbytes(layer) for _, layer in convs)
    if len(data) < header:
        raise DarknetFormatError(
            f"{spath}: truncated header: expected {header} bytes, file has {len(data)}"
        )
    (seen,) = struct.unpack_from(seen_fmt, data, 12)
    offset = header
    # Every array is read before any is set: a bad file leaves the network as it was.
    loaded = []
    for index, layer in convs:
        need = _conv_nbytes(layer)
        if offset + need > len(data):
            raise DarknetFormatError(
                f"{spath}: truncated at layer {index} (convolutional {layer.filters}x"
                f"{layer.in_shape[0]}x{layer.size}x{layer.size}): it needs {need} bytes from "
                f"offset {offset} but only {len(data) - offset} remain; the network needs "
                f"{expected_total} bytes, the file has {len(data)}"
            )
        for name, shape in _conv_arrays(layer):
            count = int(np.prod(shape))
            block = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
            loaded.append((layer, name, block.astype(np.float32).reshape(shape)))
            offset += 4 * count
    if offset != len(data):
        last = convs[-1][0] if convs else None
        raise DarknetFormatError(
            f"{spath}: {len(data) - offset} trailing bytes after the last conv layer "
            f"(layer {last}): the network needs {expected_total} bytes, the file has {len(data)}"
        )
    for layer, name, array in loaded:
        setattr(layer, name, array)
    net.version = version
    net.seen = seen
    return net


def save_weights(net: Network, path: PathLike) -> None:
    """Write ``net``'s conv parameters as a darknet ``.weights`` file.

    The header carries ``net.version`` and ``net.seen`` (with the ``seen`` width the version
    implies), so ``load_weights(parse_cfg(cfg), path)`` after ``save_weights`` round-trips every
    array bit for bit.

    Raises
    ------
    ValueError
        If a parameter array does not have the shape the layer declares.
    """
    chunks = [
        struct.pack("<3i", *net.version),
        struct.pack(_seen_format(net.version), net.seen),
    ]
    for index, layer in enumerate(net.layers):
        if not isinstance(layer, ConvLayer):
            continue
        for name, shape in _conv_arrays(layer):
            array = getattr(layer, name)
            if array is None or np.shape(array) != shape:
                raise ValueError(
                    f"layer {index}: {name} has shape {np.shape(array)}, expected {shape}"
                )
            chunks.append(np.asarray(array, dtype="<f4").tobytes())
    with open(path, "wb") as f:
        f.write(b"".join(chunks))


def load_darknet(cfg: PathLike, weights: PathLike) -> Network:
    """``load_weights(parse_cfg(cfg), weights)``: a darknet network ready to run."""
    return load_weights(parse_cfg(cfg), weights)
