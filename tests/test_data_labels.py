"""Darknet label files, list files and the images/ -> labels/ path rule."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from model.data.labels import LabelError, label_path, read_labels, read_list, write_labels


def test_label_path_rule():
    assert label_path("/d/images/a.jpg") == Path("/d/labels/a.txt")
    assert label_path("/d/VOC2007/JPEGImages/000001.JPEG") == Path("/d/VOC2007/labels/000001.txt")
    # Only the last images/ component is replaced.
    assert label_path("/images/set/images/x.png") == Path("/images/set/labels/x.txt")
    with pytest.raises(LabelError, match="no 'images'"):
        label_path("/d/pics/a.jpg")
    with pytest.raises(LabelError, match="extension"):
        label_path("/d/images/a.gif")


def test_read_labels_reorders_to_truth_layout(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("2 0.5 0.25 0.1 0.2\n\n0 0.125 0.75 1 0.5\n")
    np.testing.assert_allclose(read_labels(p, classes=3),
                               [[0.5, 0.25, 0.1, 0.2, 2], [0.125, 0.75, 1, 0.5, 0]])


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n", 2, "expected 'class x y w h', got 4 fields"),
        ("0 0.5 0.5 0.1 abc\n", 1, "non-numeric"),
        ("1.5 0.5 0.5 0.1 0.1\n", 1, "not a non-negative integer"),
        ("-1 0.5 0.5 0.1 0.1\n", 1, "not a non-negative integer"),
        ("0 0.5 0.5 0.1 0.1\n\n3 0.5 0.5 0.1 0.1\n", 3, "class 3 >= number of classes 3"),
        ("0 120 80 10 10\n", 1, "outside \\[0, 1\\] \\(not normalized\\?\\)"),
        ("0 0.5 0.5 0 0.1\n", 1, "size"),
    ],
)
def test_malformed_label_names_file_and_line(tmp_path, text, line, message):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(LabelError, match=f"bad.txt:{line}: .*{message}"):
        read_labels(p, classes=3)


def test_empty_label_file_warns_with_name(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        boxes = read_labels(p)
    assert boxes.shape == (0, 5)
    assert len(w) == 1 and "empty.txt: empty label file" in str(w[0].message)


def test_missing_label_file(tmp_path):
    with pytest.raises(LabelError, match="nope.txt: label file not found"):
        read_labels(tmp_path / "nope.txt")


def test_write_then_read_round_trip(tmp_path):
    boxes = np.array([[0.5, 0.25, 0.125, 0.5, 1], [0.75, 0.75, 0.25, 0.25, 0]], np.float32)
    write_labels(tmp_path / "r.txt", boxes)
    first = (tmp_path / "r.txt").read_text().splitlines()[0]
    assert first == "1 0.500000 0.250000 0.125000 0.500000"
    np.testing.assert_allclose(read_labels(tmp_path / "r.txt"), boxes)


def test_list_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    lst = tmp_path / "train.txt"
    lst.write_text("images/a.png\n\n" + str(tmp_path / "images" / "a.png") + "\n")
    assert read_list(lst) == [tmp_path / "images" / "a.png"] * 2
    lst.write_text("images/a.png\nimages/missing.png\n")
    with pytest.raises(LabelError, match="train.txt:2: image 'images/missing.png' not found"):
        read_list(lst)
    lst.write_text("\n")
    with pytest.raises(LabelError, match="names no image"):
        read_list(lst)
