"""Image loading, darknet's letterbox (against the real darknet and a loop oracle), drawing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.detect import Detection
from model.image import draw_detections, letterbox, load_image, resize_image
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


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P"])
def test_other_modes_are_converted_to_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (5, 7, 4), dtype=np.uint8), "RGBA")
    img = rgba.convert("RGB").convert("P") if mode == "P" else rgba.convert(mode)
    path = tmp_path / f"img_{mode}.png"
    img.save(path)
    got = load_image(path)
    expected_rgb = np.asarray(Image.open(path).convert("RGB"), np.float64).transpose(2, 0, 1)
    assert got.shape == (3, 5, 7) and got.dtype == F32
    np.testing.assert_array_equal(got, (expected_rgb / 255).astype(F32))
    if mode in ("L", "LA"):
        assert np.array_equal(got[0], got[1]) and np.array_equal(got[1], got[2])


def test_unsupported_mode_is_rejected_naming_file_and_mode(tmp_path):
    path = tmp_path / "float.tiff"
    Image.new("F", (4, 3)).save(path)
    with pytest.raises(ValueError, match=r"float\.tiff: unsupported image mode 'F'"):
        load_image(path)


def test_non_image_file_is_rejected(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png: not an image file"):
        load_image(path)


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
