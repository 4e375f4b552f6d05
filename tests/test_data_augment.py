"""Darknet-style augmentation: boxes follow the pixels through crop jitter and flip."""

import numpy as np

from model.data.augment import Augment


def white_box_image(box, size=64):
    """Black image with the (x, y, w, h) box painted white, on whole pixels."""
    img = np.zeros((3, size, size), np.float32)
    x, y, w, h = box
    img[:, round((y - h / 2) * size):round((y + h / 2) * size),
        round((x - w / 2) * size):round((x + w / 2) * size)] = 1
    return img


def bright_extent(img):
    """Normalized (x0, y0, x1, y1) of pixels brighter than 0.5: an oracle independent of the
    box arithmetic."""
    ys, xs = np.nonzero(img[0] > 0.5)
    h, w = img.shape[1:]
    return np.array([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])


def test_off_is_identity():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (3, 64, 64)).astype(np.float32)
    boxes = np.array([[0.5, 0.5, 0.25, 0.25, 1]], np.float32)
    out, ob = Augment.off()(img, boxes, 64, 64, rng)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(ob, boxes)


def test_boxes_follow_pixels_through_jitter_and_flip():
    box = (0.40625, 0.53125, 0.3125, 0.25)  # whole pixels at 64x64
    img = white_box_image(box)
    aug = Augment(jitter=0.2, hue=0, saturation=1, exposure=1, flip=True)
    for seed in range(20):
        out, ob = aug(img, np.array([[*box, 2]], np.float32), 64, 64, np.random.default_rng(seed))
        assert ob.shape == (1, 5) and ob[0, 4] == 2
        x, y, w, h = ob[0, :4]
        got = np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2])
        # Bilinear resize blurs edges by up to ~1.5 source pixels.
        np.testing.assert_allclose(got, bright_extent(out), atol=2.5 / 64)
    assert out.shape == (3, 64, 64)


def test_flip_mirrors_image_and_box():
    img = white_box_image((0.25, 0.5, 0.25, 0.5))
    aug = Augment(jitter=0, hue=0, saturation=1, exposure=1, flip=True)
    seen = set()
    for seed in range(10):
        out, ob = aug(img, np.array([[0.25, 0.5, 0.25, 0.5, 0]], np.float32), 64, 64,
                      np.random.default_rng(seed))
        if np.array_equal(out, img):
            np.testing.assert_allclose(ob[0, :4], [0.25, 0.5, 0.25, 0.5])
            seen.add("same")
        else:
            np.testing.assert_array_equal(out, img[:, :, ::-1])
            np.testing.assert_allclose(ob[0, :4], [0.75, 0.5, 0.25, 0.5])
            seen.add("flipped")
    assert seen == {"same", "flipped"}


def test_exposure_scales_grey_values_uniformly():
    rng = np.random.default_rng(1)
    grey = np.repeat(rng.uniform(0.1, 0.5, (1, 16, 16)), 3, axis=0).astype(np.float32)
    aug = Augment(jitter=0, hue=0, saturation=1, exposure=1.5, flip=False)
    out, _ = aug(grey, np.zeros((0, 5), np.float32), 16, 16, rng)
    ratio = out / grey
    assert 1 / 1.5 - 1e-6 <= ratio.min() and ratio.max() <= 1.5 + 1e-6
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
