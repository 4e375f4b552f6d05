"""Image loading, darknet's letterbox (against the real darknet and a loop oracle), drawing."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from model.detect import Detection
from model.image import MAX_IMAGE_PIXELS, draw_detections, letterbox, load_image, resize_image
from model.pipeline import prepare_input
from model.zoo import DOG_IMAGE

F32 = np.float32


def resize_naive(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet src/image.c ``resize_image``, transliterated loop by loop with float32 scalars."""
    c_n, im_h, im_w = im.shape
    part = np.zeros((c_n, im_h, w), F32)
    out = np.zeros((c_n, h, w), F32)
    w_scale = F32(im_w - 1) / F32(w - 1)
    h_scale = F32(im_h - 1) / F32(h - 1)
    for k in range(c_n):
        for r in range(im_h):
            for c in range(w):
                if c == w - 1 or im_w == 1:
                    val = im[k, r, im_w - 1]
                else:
                    sx = F32(c) * w_scale
                    ix = int(sx)
                    dx = F32(sx - F32(ix))
                    val = F32(F32(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
                part[k, r, c] = val
    for k in range(c_n):
        for r in range(h):
            sy = F32(r) * h_scale
            iy = int(sy)
            dy = F32(sy - F32(iy))
            for c in range(w):
                out[k, r, c] = F32(F32(1) - dy) * part[k, iy, c]
            if r == h - 1 or im_h == 1:
                continue
            for c in range(w):
                out[k, r, c] += dy * part[k, iy + 1, c]
    return out


def test_letterbox_of_dog_equals_darknet_input(darknet_tiny96):
    ref = darknet_tiny96
    image = load_image(DOG_IMAGE)
    assert image.shape == (3, 576, 768) and image.dtype == F32
    want = np.fromfile(ref / "input.f32", dtype="<f4").reshape(3, 96, 96)
    got = letterbox(image, 96, 96)
    assert got.dtype == F32 and got.shape == (3, 96, 96)
    # bit-identical: same float32 operations in the same order as darknet's resize_image
    assert np.array_equal(got, want), np.abs(got - want).max()


@pytest.mark.parametrize(
    ("src_hw", "dst_wh"),
    [
        ((7, 11), (5, 4)),
        ((6, 5), (13, 9)),
        ((1, 6), (4, 3)),
        ((5, 1), (2, 7)),
        ((9, 9), (9, 9)),
        ((3, 4), (5, 42)),
    ],
)
def test_resize_matches_loop_oracle(src_hw, dst_wh):
    rng = np.random.default_rng([*src_hw, *dst_wh])
    im = rng.random((2, *src_hw), dtype=F32)
    assert np.array_equal(resize_image(im, *dst_wh), resize_naive(im, *dst_wh))


def test_resize_keeps_darknets_last_row_quirk():
    """3 -> 42 rows: 41 * float(2/41) rounds below 2, so darknet's last row reads row 1 with weight
    1 - dy ~ 1e-7 and skips the second term: the row is nearly black. We reproduce that."""
    im = np.ones((1, 3, 4), F32)
    out = resize_image(im, 4, 42)
    assert np.all(out[0, :-1] > 0.99) and np.all(out[0, -1] < 1e-6)


@pytest.mark.parametrize(("img_hw", "net_wh"), [((10, 23), (16, 16)), ((23, 10), (16, 12))])
def test_letterbox_placement_matches_darknet_formulas(img_hw, net_wh):
    """Tall and wide images: integer sizes and offsets as letterbox_image, 0.5 elsewhere."""
    rng = np.random.default_rng(5)
    im = rng.random((3, *img_hw), dtype=F32)
    (im_h, im_w), (w, h) = img_hw, net_wh
    if F32(w) / F32(im_w) < F32(h) / F32(im_h):
        new_w, new_h = w, im_h * w // im_w
    else:
        new_w, new_h = im_w * h // im_h, h
    want = np.full((3, h, w), 0.5, F32)
    dy, dx = (h - new_h) // 2, (w - new_w) // 2
    want[:, dy : dy + new_h, dx : dx + new_w] = resize_naive(im, new_w, new_h)
    assert np.array_equal(letterbox(im, w, h), want)


def _png(path, width, height, bit_depth=8, color_type=2, rows=None):
    """A PNG written byte by byte (``color_type`` 0 grey, 2 RGB), so that a test controls what
    Pillow refuses to write: huge or empty sizes, 16-bit RGB. ``rows``: the raw scanlines, big
    endian, without filter bytes; None writes the header and no pixel data at all."""
    def chunk(kind, data):
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = b"" if rows is None else chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in rows)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b""))
    return path


# Each mode against what stb_image gives darknet for it, worked out from the pixels written.
GREY = np.array([[0, 17, 255], [128, 64, 1]], np.uint8)
RGB = np.stack([GREY, 255 - GREY, GREY // 2], axis=-1)
PALETTE = np.array([[10, 20, 30], [40, 50, 60], [200, 100, 0]], np.uint8)
INDICES = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)


def _palette_image():
    img = Image.fromarray(INDICES, "P")
    img.putpalette(PALETTE.ravel().tolist())
    return img


@pytest.mark.parametrize(("mode", "make", "expected_hwc"), [
    ("L", lambda: Image.fromarray(GREY, "L"), np.stack([GREY] * 3, axis=-1)),  # replicated
    ("LA", lambda: Image.merge("LA", [Image.fromarray(GREY), Image.fromarray(255 - GREY)]),
     np.stack([GREY] * 3, axis=-1)),  # alpha dropped
    ("RGBA", lambda: Image.fromarray(np.dstack([RGB, GREY]), "RGBA"), RGB),
    ("P", _palette_image, PALETTE[INDICES]),  # expanded through the palette
    ("1", lambda: Image.fromarray(GREY > 100), np.stack([(GREY > 100) * 255] * 3, axis=-1)),
])
def test_other_modes_are_converted_as_stb_image_does(tmp_path, mode, make, expected_hwc):
    path = tmp_path / f"img_{mode}.png"
    make().save(path)
    got = load_image(path)
    assert Image.open(path).mode == mode  # the file really is in that mode
    assert got.shape == (3, 2, 3) and got.dtype == F32
    want = (expected_hwc.astype(np.float64).transpose(2, 0, 1) / 255).astype(F32)
    np.testing.assert_array_equal(got, want)


def test_16_bit_images_keep_the_high_byte(tmp_path):
    # stb_image reduces 16-bit samples to v >> 8: 0x1234 -> 0x12, 0x00ff -> 0, 0xff00 -> 0xff.
    samples = [0x1234, 0x00FF, 0xFF00, 0x8001]
    grey = _png(tmp_path / "grey16.png", 4, 1, 16, 0, [struct.pack(">4H", *samples)])
    want = np.array([0x12, 0x00, 0xFF, 0x80]) / 255
    assert Image.open(grey).mode == "I;16"
    np.testing.assert_array_equal(load_image(grey), np.tile(want.astype(F32), (3, 1, 1)))
    rgb = _png(tmp_path / "rgb16.png", 1, 1, 16, 2, [struct.pack(">3H", *samples[:3])])
    np.testing.assert_array_equal(load_image(rgb).ravel(), want[:3].astype(F32))


@pytest.mark.parametrize(("mode", "suffix"), [("F", "tiff"), ("I", "tiff"), ("CMYK", "jpg")])
def test_unsupported_mode_is_rejected_naming_file_size_and_mode(tmp_path, mode, suffix):
    path = tmp_path / f"img.{suffix}"
    Image.new(mode, (4, 3)).save(path)
    fmt = "TIFF" if suffix == "tiff" else "JPEG"
    with pytest.raises(ValueError, match=rf"img\.{suffix}: 4x3 {fmt} image, mode '{mode}': "
                                         r"unsupported mode \(Owlet reads RGB, RGBA"):
        load_image(path)


@pytest.mark.parametrize("content", ["text", "empty", "zero width"])
def test_non_image_file_is_rejected(tmp_path, content):
    path = tmp_path / "notes.png"
    if content == "zero width":  # no format Pillow reads can hold an empty image
        _png(path, 0, 5)
    else:
        path.write_text("not an image" if content == "text" else "")
    with pytest.raises(ValueError, match=r"notes\.png: not an image file Pillow can read"):
        load_image(path)


def test_truncated_file_is_rejected_naming_file_and_size(tmp_path):
    path = tmp_path / "cut.png"
    noise = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"cut\.png: 50x40 PNG image, mode 'RGB': corrupt or "
                                         r"truncated \(image file is truncated"):
        load_image(path)


@pytest.mark.parametrize(("width", "height"), [(9000, 8000), (10000, 10000)])
def test_too_many_pixels_are_rejected_before_decoding(tmp_path, width, height):
    # Headers only (no pixel data): the size is refused before Pillow decodes anything, and
    # without Pillow's own decompression-bomb warning, which starts at 89 M pixels.
    path = _png(tmp_path / "huge.png", width, height)
    pattern = (rf"huge\.png: {width}x{height} PNG image, mode 'RGB': {width * height} pixels, "
               rf"more than the {MAX_IMAGE_PIXELS} Owlet loads")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=pattern):
            load_image(path)


def test_decompression_bomb_is_one_clear_error(tmp_path):
    path = _png(tmp_path / "bomb.png", 20000, 20000)  # Pillow itself refuses beyond 179 M pixels
    with pytest.raises(ValueError, match=r"bomb\.png: Image size \(400000000 pixels\) exceeds "
                                         rf".* Owlet loads at most {MAX_IMAGE_PIXELS}\."):
        load_image(path)


def test_image_too_narrow_for_the_network_names_file_and_sizes(tmp_path):
    # 200x1 into 96x96: new_h = 1 * 96 // 200 = 0 rows, nothing left to detect on.
    path = tmp_path / "strip.png"
    Image.new("RGB", (200, 1)).save(path)
    with pytest.raises(ValueError, match=r"strip\.png: a 200x1 image letterboxes to 96x0 in the "
                                         r"96x96 network input"):
        prepare_input(path, (3, 96, 96))
    # The widest image that keeps a row: 96 columns per row.
    Image.new("RGB", (96, 1)).save(path)
    assert prepare_input(path, (3, 96, 96))[1] == (96, 1)


def test_network_that_does_not_take_3_channels_is_named(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (8, 6)).save(path)
    with pytest.raises(ValueError, match=r"grey\.png: the 8x6 image loads as 3 channels .*"
                                         r"\(C, H, W\) = \(1, 16, 16\) takes 1"):
        prepare_input(path, (1, 16, 16))


def test_pixel_values_are_bytes_over_255(tmp_path):
    data = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "ramp.png"
    Image.fromarray(np.stack([data] * 3, axis=-1), "RGB").save(path)
    got = load_image(path)
    np.testing.assert_array_equal(got[0], (data / 255.0).astype(F32))
    assert got.min() == 0 and got.max() == 1


def test_draw_detections_writes_annotated_png(tmp_path):
    rng = np.random.default_rng(2)
    image = np.full((3, 60, 80), 0.5, F32)
    image[:, :10] = rng.random((3, 10, 80), dtype=F32)
    src = tmp_path / "src.png"
    Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(src)
    kept = Detection(0.5, 0.5, 0.5, 0.5, 0.9, np.float32([0.0, 0.8]))
    below = Detection(0.2, 0.8, 0.2, 0.2, 0.9, np.float32([0.1, 0.0]))
    out = tmp_path / "out.png"
    draw_detections(src, [kept, below], ["cat", "dog"], out, thresh=0.2)
    drawn = np.asarray(Image.open(out).convert("RGB"))
    original = np.asarray(Image.open(src).convert("RGB"))
    assert drawn.shape == original.shape
    # the kept box spans x 20..60, y 15..45: its bottom edge is recoloured ...
    assert (drawn[45, 25:55] != original[45, 25:55]).any()
    # ... and nothing is drawn for the detection whose scores are all below thresh
    assert np.array_equal(drawn[50:55, 10:20], original[50:55, 10:20])

    untouched = tmp_path / "none.png"
    draw_detections(image, [], ["cat", "dog"], untouched)
    assert np.array_equal(np.asarray(Image.open(untouched)), original)


def test_draw_detections_skips_boxes_outside_the_image(tmp_path):
    # Untrained networks decode boxes of negative size or entirely off the image: darknet's
    # draw_box draws nothing for them, and neither may we (nor crash).
    img = np.full((3, 20, 30), 0.5, np.float32)
    probs = np.array([0.9], np.float32)
    dets = [Detection(2.0, 0.5, 0.2, 0.2, 0.9, probs), Detection(0.5, 0.5, -0.3, 0.2, 0.9, probs),
            Detection(0.5, -1.5, 0.2, 0.4, 0.9, probs)]
    out = tmp_path / "none.png"
    draw_detections(img, dets, ["thing"], out)
    assert np.all(np.asarray(Image.open(out)) == 128)
