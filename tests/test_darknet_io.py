"""Darknet cfg/weights I/O: the reference network, round trips and every error path."""

from __future__ import annotations

import dataclasses
import re
import struct

import numpy as np
import pytest

from model.darknet import DarknetFormatError, load_weights, parse_cfg, save_weights, write_cfg
from model.network import ConvLayer, MaxpoolLayer, Network, RegionLayer
from model.zoo import REFERENCE_CFG, REFERENCE_WEIGHTS


@pytest.fixture(scope="module")
def ref(darknet_tiny96):
    return darknet_tiny96


def assert_same_network(a: Network, b: Network) -> None:
    """Field-by-field equality, arrays compared bit for bit (dtype included)."""
    assert (a.input_shape, a.options, a.version, a.seen) == (
        b.input_shape,
        b.options,
        b.version,
        b.seen,
    )
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert type(la) is type(lb)
        for f in dataclasses.fields(la):
            va, vb = getattr(la, f.name), getattr(lb, f.name)
            if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                assert va.dtype == vb.dtype and va.shape == vb.shape, f.name
                assert va.tobytes() == vb.tobytes(), f.name
            else:
                assert va == vb, f.name


def test_reference_cfg_shapes_match_darknet_outputs(ref):
    net = parse_cfg(REFERENCE_CFG)
    assert net.input_shape == (3, 96, 96)
    assert len(net.layers) == 15
    kinds = [layer.kind for layer in net.layers]
    assert kinds == ["convolutional", "maxpool"] * 6 + ["convolutional"] * 2 + ["region"]
    # darknet dumped every layer's output: its element count checks our shape arithmetic,
    # including the size-2 stride-1 maxpool (layer 11) that keeps the map size.
    for i, layer in enumerate(net.layers):
        n_floats = (ref / f"layer{i:02d}.f32").stat().st_size // 4
        assert int(np.prod(layer.out_shape)) == n_floats, i
    assert net.layers[11].out_shape == net.layers[11].in_shape == (128, 3, 3)
    assert net.layers[13].padding == 0  # size=1 pad=1 means padding size//2 = 0
    assert net.options == {
        "batch": "1",
        "subdivisions": "1",
        "width": "96",
        "height": "96",
        "channels": "3",
    }
    region = net.region
    assert isinstance(region, RegionLayer)
    assert (region.classes, region.coords, region.num, region.softmax) == (3, 4, 5, True)
    assert region.anchors.shape == (5, 2)
    np.testing.assert_array_equal(region.anchors[4], np.float32([16.62, 10.52]))
    assert region.options["thresh"] == ".6"  # "thresh = .6": blanks stripped as darknet does
    assert region.options["jitter"] == ".2" and region.options["bias_match"] == "1"


def test_parse_cfg_zero_initialises_with_documented_shapes(ref):
    net = parse_cfg(REFERENCE_CFG)
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            c = layer.in_shape[0]
            assert layer.weights.shape == (layer.filters, c, layer.size, layer.size)
            arrays = [layer.weights, layer.biases]
            if layer.batch_normalize:
                arrays += [layer.scales, layer.rolling_mean, layer.rolling_variance]
            else:
                assert layer.scales is None and layer.rolling_variance is None
            for a in arrays:
                assert a.dtype == np.float32 and not a.any()


def test_weights_round_trip_is_byte_identical_to_darknet_file(ref, tmp_path):
    net = parse_cfg(REFERENCE_CFG)
    load_weights(net, REFERENCE_WEIGHTS)
    assert net.version == (0, 2, 0)
    assert net.layers[0].rolling_variance.min() > 0  # real BN statistics were read
    out = tmp_path / "copy.weights"
    save_weights(net, out)
    assert out.read_bytes() == (REFERENCE_WEIGHTS).read_bytes()
    again = load_weights(parse_cfg(REFERENCE_CFG), out)
    assert_same_network(net, again)


@pytest.mark.parametrize(
    ("version", "seen", "header_bytes"),
    [((0, 2, 0), 2**40 + 3, 20), ((0, 1, 0), 12345, 16), ((1, 0, 0), 7, 20), ((0, 1000, 5), 9, 16)],
)
def test_weights_header_seen_width(tmp_path, version, seen, header_bytes):
    """``seen`` is 64-bit iff major*10+minor >= 2 and both < 1000 (darknet load_weights_upto)."""
    cfg = tmp_path / "a.cfg"
    cfg.write_text(
        "[net]\nwidth=5\nheight=4\nchannels=2\n[convolutional]\nfilters=3\nsize=1\n"
        "activation=linear\n"
    )
    net = parse_cfg(cfg)
    rng = np.random.default_rng(0)
    conv = net.layers[0]
    conv.weights = rng.standard_normal(conv.weights.shape).astype(np.float32)
    conv.biases = rng.standard_normal(3).astype(np.float32)
    net.version, net.seen = version, seen
    path = tmp_path / "a.weights"
    save_weights(net, path)
    data = path.read_bytes()
    assert len(data) == header_bytes + 4 * (3 + 3 * 2)
    assert struct.unpack_from("<3i", data) == version
    assert_same_network(net, load_weights(parse_cfg(cfg), path))


def _random_network(tmp_path) -> tuple[Network, str]:
    """A cfg exercising every supported key and value, with random parameters."""
    text = """\
# comment line
[net]
batch=64
subdivisions = 8
width=13
height=11
channels=3
learning_rate=0.001
policy=steps
steps=-1,100
scales=.1,10

[convolutional]
batch_normalize=1
filters=5
size=3
stride=2
pad=1
activation=leaky

; another comment
[maxpool]
size=3
stride=1
padding=1

[conv]
filters=4
size=2
stride=1
padding=1
activation=leaky

[max]
size=2
stride=1

[convolutional]
filters=12
size=1
stride=1
pad=1
activation=linear

[region]
anchors = 0.5,1.25, 2,3.75
classes=1
coords=4
num=2
softmax=0
jitter=.3
thresh=.6
"""
    cfg = tmp_path / "rand.cfg"
    cfg.write_text(text)
    net = parse_cfg(cfg)
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            layer.weights = rng.standard_normal(layer.weights.shape).astype(np.float32)
            layer.biases = rng.standard_normal(layer.filters).astype(np.float32)
            if layer.batch_normalize:
                layer.scales = rng.standard_normal(layer.filters).astype(np.float32)
                layer.rolling_mean = rng.standard_normal(layer.filters).astype(np.float32)
                layer.rolling_variance = rng.uniform(0.1, 2, layer.filters).astype(np.float32)
    net.seen = 640
    return net, str(cfg)


def test_parse_of_every_supported_key(tmp_path):
    net, _ = _random_network(tmp_path)
    conv0, pool1, conv2, pool3, conv4, region = net.layers
    assert (conv0.padding, conv0.out_shape) == (1, (5, 6, 7))
    assert isinstance(pool1, MaxpoolLayer) and pool1.out_shape == (5, 5, 6)  # (6+1-3)//1+1
    assert (conv2.padding, conv2.out_shape, conv2.batch_normalize) == (1, (4, 6, 7), False)
    assert pool3.padding == 1 and pool3.out_shape == (4, 6, 7)
    assert conv4.activation == "linear" and conv4.padding == 0
    assert region.softmax is False and region.options == {"jitter": ".3", "thresh": ".6"}
    np.testing.assert_array_equal(region.anchors, np.float32([[0.5, 1.25], [2, 3.75]]))
    assert net.options["subdivisions"] == "8" and net.options["steps"] == "-1,100"


def test_cfg_and_weights_round_trip(tmp_path):
    net, _ = _random_network(tmp_path)
    write_cfg(net, tmp_path / "out.cfg")
    save_weights(net, tmp_path / "out.weights")
    back = load_weights(parse_cfg(tmp_path / "out.cfg"), tmp_path / "out.weights")
    assert_same_network(net, back)


def test_write_cfg_takes_input_shape_from_network(tmp_path, ref):
    net = parse_cfg(REFERENCE_CFG)
    net.input_shape = (3, 160, 128)
    write_cfg(net, tmp_path / "resized.cfg")
    back = parse_cfg(tmp_path / "resized.cfg")
    assert back.input_shape == (3, 160, 128)
    assert back.options["width"] == "128" and back.options["height"] == "160"
    assert back.layers[-1].out_shape == (40, 5, 4)


def _conv_bytes(layer: ConvLayer) -> int:
    per_filter = 1 + 3 * layer.batch_normalize + layer.in_shape[0] * layer.size**2
    return 4 * layer.filters * per_filter


def test_truncated_weights_name_layer_and_byte_counts(ref, tmp_path):
    net = parse_cfg(REFERENCE_CFG)
    data = (REFERENCE_WEIGHTS).read_bytes()
    # cut inside the second-to-last conv layer (darknet layer 12)
    start_12 = 20 + sum(
        _conv_bytes(layer) for layer in net.layers[:12] if isinstance(layer, ConvLayer)
    )
    cut = start_12 + 100
    bad = tmp_path / "cut.weights"
    bad.write_bytes(data[:cut])
    with pytest.raises(DarknetFormatError) as err:
        load_weights(net, bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "layer 12" in msg
    assert f"needs {_conv_bytes(net.layers[12])} bytes" in msg
    assert "only 100 remain" in msg
    assert f"needs {len(data)} bytes, the file has {cut}" in msg


@pytest.mark.parametrize("damage", ["truncated", "trailing"])
def test_failed_load_leaves_the_network_untouched(tmp_path, damage):
    """A weights file found bad at its end -- cut inside the last conv layer, or longer than the
    network -- changes nothing: every layer keeps its arrays (the same objects, the same values)
    and the header fields."""
    net = load_weights(parse_cfg(REFERENCE_CFG), REFERENCE_WEIGHTS)
    other = load_weights(parse_cfg(REFERENCE_CFG), REFERENCE_WEIGHTS)
    for layer in other.layers:  # another network of the same shape, so every array would change
        if isinstance(layer, ConvLayer):
            layer.weights = layer.weights * 2 + 1
            layer.biases = layer.biases - 3
    other.version, other.seen = (0, 2, 5), 123
    path = tmp_path / f"{damage}.weights"
    save_weights(other, path)
    data = path.read_bytes()
    path.write_bytes(data[:-4] if damage == "truncated" else data + bytes(4))
    convs = [layer for layer in net.layers if isinstance(layer, ConvLayer)]
    names = ("biases", "scales", "rolling_mean", "rolling_variance", "weights")
    header = (net.version, net.seen)
    before = [[getattr(layer, name) for name in names] for layer in convs]
    copies = [[None if a is None else a.copy() for a in arrays] for arrays in before]
    with pytest.raises(DarknetFormatError, match=damage):
        load_weights(net, path)
    assert (net.version, net.seen) == header
    for layer, arrays, saved in zip(convs, before, copies, strict=True):
        for name, array, copy in zip(names, arrays, saved, strict=True):
            assert getattr(layer, name) is array, name
            assert array is None or np.array_equal(array, copy), name


def test_truncated_header(tmp_path, ref):
    bad = tmp_path / "hdr.weights"
    bad.write_bytes(struct.pack("<3i", 0, 2, 0) + b"\0\0\0")
    pattern = r"truncated header: expected 20 bytes, file has 15"
    with pytest.raises(DarknetFormatError, match=pattern):
        load_weights(parse_cfg(REFERENCE_CFG), bad)


def test_trailing_bytes_are_an_error(ref, tmp_path):
    data = (REFERENCE_WEIGHTS).read_bytes()
    bad = tmp_path / "long.weights"
    bad.write_bytes(data + b"\0" * 8)
    with pytest.raises(DarknetFormatError) as err:
        load_weights(parse_cfg(REFERENCE_CFG), bad)
    msg = str(err.value)
    assert str(bad) in msg and "8 trailing bytes" in msg and "(layer 13)" in msg
    assert f"needs {len(data)} bytes, the file has {len(data) + 8}" in msg


def test_darknet_format_error_is_value_error():
    assert issubclass(DarknetFormatError, ValueError)


BASE = "[net]\nwidth=8\nheight=8\nchannels=3\n"


@pytest.mark.parametrize(
    ("text", "line", "pattern"),
    [
        (BASE + "[shortcut]\nfrom=-1\n", 5, r"unknown section \[shortcut\]"),
        (BASE + "[convolutional]\nfilters=2\ngroups=2\n", 7, r"unknown key 'groups'"),
        (BASE + "bogus=1\n", 5, r"unknown key 'bogus' in \[net\]"),
        (BASE + "[maxpool]\nsize=2\nsize=2\n", 7, r"duplicate key 'size'"),
        (BASE + "[convolutional]\nfilters=2\nactivation=relu\n", 7, r"unsupported activation"),
        (BASE + "[convolutional]\nfilters=2\n", 5, r"unsupported activation 'logistic'"),
        (BASE + "[convolutional]\nfilters=two\n", 6, r"'filters' must be an integer"),
        (BASE + "[convolutional]\nfilters\n", 6, r"expected 'key=value'"),
        ("width=3\n[net]\n", 1, r"before the first section"),
        ("\n[maxpool]\nsize=2\n", 2, r"first section must be \[net\]"),
        ("[net]\nwidth=8\nheight=8\n", 1, r"missing required key 'channels'"),
        (BASE + "[region]\nclasses=1\nnum=1\n", 5, r"input has 3 channels, expected"),
        (
            BASE + "[convolutional]\nfilters=6\nactivation=linear\n[region]\nnum=1\nclasses=1\n"
            "anchors=1,2,3\n",
            11,
            r"3 anchor values for num=1",
        ),
    ],
)
def test_cfg_errors_name_file_and_line(tmp_path, text, line, pattern):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    with pytest.raises(DarknetFormatError, match=pattern) as err:
        parse_cfg(cfg)
    assert str(err.value).startswith(f"{cfg}:{line}:"), str(err.value)
    assert re.search(pattern, str(err.value))
