"""The synthetic detection set, the darknet-layout writer and the list-file dataset reading it."""

import numpy as np

from model.data.augment import Augment
from model.data.dataset import DarknetDataset
from model.data.synthetic import CLASS_NAMES, SyntheticDetection, write_darknet_dataset


def test_deterministic_from_seed_and_index():
    a, b = SyntheticDetection(seed=7), SyntheticDetection(seed=7)
    for i in (0, 5, 123456789):
        ia, ba = a[i]
        ib, bb = b[i]
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
    assert not np.array_equal(a[0][0], SyntheticDetection(seed=8)[0][0])
    assert not np.array_equal(a[0][0], a[1][0])


def test_images_and_boxes_are_well_formed():
    ds = SyntheticDetection(seed=3, size=64, min_objects=1, max_objects=3)
    seen_classes = set()
    for i in range(60):
        img, boxes = ds[i]
        assert img.shape == (3, 64, 64) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1
        assert 1 <= len(boxes) <= 3
        x0, x1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 0] + boxes[:, 2] / 2
        assert (x0 >= 0).all() and (x1 <= 1 + 1e-6).all()
        assert ((boxes[:, 2] >= 0.2 - 1e-6) & (boxes[:, 2] <= 0.5 + 1e-6)).all()
        seen_classes |= set(boxes[:, 4].astype(int))
    assert seen_classes == set(range(len(CLASS_NAMES)))


def test_rectangle_boxes_are_tight():
    # A rectangle fills its box with one colour: the box interior is constant and growing the box
    # by one pixel on any side takes in a different pixel (objects are coloured away from the
    # background), unless that side touches the image border.
    ds = SyntheticDetection(seed=11, max_objects=1)
    checked = 0
    for i in range(100):
        img, boxes = ds[i]
        x, y, w, h, c = boxes[0]
        if c != 1:
            continue
        x0, y0 = round((x - w / 2) * 64), round((y - h / 2) * 64)
        x1, y1 = round((x + w / 2) * 64), round((y + h / 2) * 64)
        inside = img[:, y0:y1, x0:x1].reshape(3, -1)
        assert np.ptp(inside, axis=1).max() == 0
        colour = inside[:, 0]
        for rows, cols in ((slice(y0, y1), x0 - 1), (slice(y0, y1), x1),
                           (y0 - 1, slice(x0, x1)), (y1, slice(x0, x1))):
            if any(isinstance(s, int) and not 0 <= s < 64 for s in (rows, cols)):
                continue
            edge = img[:, rows, cols].reshape(3, -1)
            assert (np.abs(edge - colour[:, None]).sum(axis=0) > 0).any()
        checked += 1
    assert checked >= 10


def test_written_dataset_reads_back_through_list_file(tmp_path):
    ds = SyntheticDetection(seed=5, length=4)
    lst = write_darknet_dataset(ds, tmp_path, "val")
    assert lst.read_text().count("\n") == 4
    real = DarknetDataset(lst, classes=3, width=64, height=64, augment=Augment.off())
    assert len(real) == 4
    rng = np.random.default_rng(0)
    for i in range(4):
        img, boxes = ds[i]
        rimg, rboxes = real.sample(i, rng)
        np.testing.assert_allclose(rimg, np.round(img * 255) / 255, atol=1e-6)
        np.testing.assert_allclose(rboxes, boxes, atol=1e-6)
        limg, wh, lboxes = real.eval_item(i)
        assert wh == (64, 64) and limg.shape == (3, 64, 64)
        np.testing.assert_allclose(lboxes, boxes, atol=1e-6)
