"""Darknet/YOLO label files and list files.

A label file holds one object per line, ``class x y w h``, with the box centre and size normalized
to [0, 1] by the image size. The label file of an image is found by darknet's path rule
(Ref: darknet src/data.c ``fill_truth_detection``): the directory ``images`` (or ``JPEGImages``)
becomes ``labels`` and the extension becomes ``.txt``. A list file names one image per line.

Malformed input raises :class:`LabelError` naming the file and line; an empty label file (an image
without objects) is legal but suspicious, so it warns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["LabelError", "label_path", "read_labels", "read_list", "write_labels"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")


class LabelError(ValueError):
    """A label or list file is malformed; the message starts with ``path:line:``."""


def label_path(image_path: str | Path) -> Path:
    """The label file of an image, by darknet's rule.

    ``.../images/a.jpg`` -> ``.../labels/a.txt``; ``JPEGImages`` is replaced as well. Only the last
    matching directory component is replaced, so a parent directory named ``images`` is kept.
    """
    p = Path(image_path)
    parts = list(p.parent.parts)
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] in ("images", "JPEGImages"):
            parts[k] = "labels"
            break
    else:
        raise LabelError(f"{p}: no 'images' or 'JPEGImages' directory to map to 'labels'")
    if p.suffix not in _IMAGE_EXTS:
        raise LabelError(f"{p}: unknown image extension {p.suffix!r}")
    return Path(*parts) / (p.stem + ".txt")


def read_labels(path: str | Path, classes: int | None = None) -> np.ndarray:
    """Read a darknet label file.

    Parameters
    ----------
    path : path of the ``.txt`` label file
    classes : int, optional
        If given, class ids must be below it.

    Returns
    -------
    boxes : float32 array, shape (n, 5)
        ``(x, y, w, h, class)`` per object: darknet's truth order (box first, class last).

    Raises
    ------
    LabelError
        Missing file, wrong field count, non-numeric field, non-integer or out-of-range class,
        centre outside [0, 1], or size outside (0, 1]; the message names the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise LabelError(f"{p}: label file not found")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{p}:{n}"
        if len(fields) != 5:
            raise LabelError(f"{where}: expected 'class x y w h', got {len(fields)} fields")
        try:
            cls_f, x, y, w, h = (float(f) for f in fields)
        except ValueError:
            raise LabelError(f"{where}: non-numeric field in {line.strip()!r}") from None
        if cls_f != int(cls_f) or cls_f < 0:
            raise LabelError(f"{where}: class {fields[0]!r} is not a non-negative integer")
        if classes is not None and cls_f >= classes:
            raise LabelError(f"{where}: class {int(cls_f)} >= number of classes {classes}")
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise LabelError(f"{where}: box centre ({x}, {y}) outside [0, 1] (not normalized?)")
        if not (0 < w <= 1 and 0 < h <= 1):
            raise LabelError(f"{where}: box size ({w}, {h}) outside (0, 1]")
        rows.append((x, y, w, h, cls_f))
    if not rows:
        warnings.warn(f"{p}: empty label file (image without objects)", stacklevel=2)
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def write_labels(path: str | Path, boxes: np.ndarray) -> None:
    """Write ``(x, y, w, h, class)`` rows as a darknet label file (``class x y w h``)."""
    lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for x, y, w, h, c in np.asarray(boxes)]
    Path(path).write_text("".join(s + "\n" for s in lines))


def read_list(path: str | Path) -> list[Path]:
    """Image paths of a darknet list file.

    Blank lines are skipped. Relative paths are taken relative to the list file's directory (not
    the current directory, as darknet does), so a dataset directory can be moved as a whole.

    Raises
    ------
    LabelError
        Missing list file, an empty list, or a listed image that does not exist (file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise LabelError(f"{p}: list file not found")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        img = Path(s) if Path(s).is_absolute() else p.parent / s
        if not img.is_file():
            raise LabelError(f"{p}:{n}: image {s!r} not found")
        out.append(img)
    if not out:
        raise LabelError(f"{p}: list file names no image")
    return out
