"""A procedurally generated detection dataset: coloured shapes on textured backgrounds.

Every image is a pure function of ``(seed, index)``, so a fresh machine trains without downloads
and two runs with the same seed see the same pixels. Objects are ellipses, rectangles and
triangles (the class is the shape, never the colour) of varying size, aspect ratio, position and
colour, with limited overlap, on a smooth random background with fine grain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.data.labels import write_labels

__all__ = ["CLASS_NAMES", "SyntheticDetection", "write_darknet_dataset"]

#: Class names, in class-id order.
CLASS_NAMES = ("ellipse", "rectangle", "triangle")


def _box_iou_xyxy(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass(frozen=True)
class SyntheticDetection:
    """The synthetic detection set, indexable as ``dataset[i]`` for ``0 <= i < length``.

    Parameters
    ----------
    seed : int
        Train and test sets use different seeds so they share no image.
    length : int
        Number of images (indices beyond it are just as valid: generation is on the fly).
    size : int
        Square image side in pixels (the network input size).
    min_objects, max_objects : int
        Objects per image, drawn uniformly.
    min_size, max_size : float
        Object side as a fraction of the image.
    max_overlap : float
        An object is redrawn (up to a few tries, then dropped) if its IoU with one already placed
        exceeds this.
    """

    seed: int
    length: int = 1000
    size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    min_size: float = 0.2
    max_size: float = 0.5
    max_overlap: float = 0.2

    classes = len(CLASS_NAMES)

    def __len__(self) -> int:
        return self.length

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        s = self.size
        base = rng.uniform(0.15, 0.85, size=3)
        coarse = rng.normal(0, 0.12, size=(5, 5, 3))
        img = np.asarray(
            Image.fromarray(((coarse + 0.5) * 255).clip(0, 255).astype(np.uint8)).resize(
                (s, s), Image.BILINEAR
            ),
            dtype=np.float32,
        ) / 255.0 - 0.5
        # A random stripe pattern makes the background textured, not just smooth.
        yy, xx = np.mgrid[0:s, 0:s] / s
        ang, freq = rng.uniform(0, np.pi), rng.uniform(3, 9)
        stripes = 0.06 * np.sin(2 * np.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang)))
        img = base + img + stripes[..., None] + rng.normal(0, 0.02, size=(s, s, 3))
        return img.clip(0, 1)

    def __getitem__(self, index: int):
        """One image and its truth boxes.

        Returns
        -------
        image : float32 array, shape (3, size, size)
            RGB in [0, 1], CHW like :func:`model.image.load_image`.
        boxes : float32 array, shape (n, 5)
            ``(x, y, w, h, class)``: darknet's normalized centre/size and the class id.
        """
        if index < 0:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        s = self.size
        bg = self._background(rng)
        canvas = Image.fromarray((bg * 255).round().astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        placed: list[tuple[float, float, float, float]] = []
        labels = []
        for _ in range(rng.integers(self.min_objects, self.max_objects + 1)):
            for _try in range(10):
                w = int(round(rng.uniform(self.min_size, self.max_size) * s))
                h = int(round(w * np.exp(rng.uniform(-0.4, 0.4))))
                h = int(np.clip(h, self.min_size * s, self.max_size * s))
                x0 = int(rng.integers(0, s - w + 1))
                y0 = int(rng.integers(0, s - h + 1))
                box = (x0, y0, x0 + w, y0 + h)
                if all(_box_iou_xyxy(box, p) <= self.max_overlap for p in placed):
                    break
            else:
                continue
            cls = int(rng.integers(0, self.classes))
            # A colour far from the local background, so every object is visible.
            local = bg[y0 : y0 + h, x0 : x0 + w].mean(axis=(0, 1))
            for _c in range(20):
                colour = rng.uniform(0, 1, size=3)
                if np.abs(colour - local).sum() > 0.6:
                    break
            fill = tuple(int(v) for v in (colour * 255).round())
            # PIL boxes are inclusive pixel ranges: the shape covers [x0, x0 + w).
            xy = (x0, y0, x0 + w - 1, y0 + h - 1)
            if cls == 0:
                draw.ellipse(xy, fill=fill)
            elif cls == 1:
                draw.rectangle(xy, fill=fill)
            else:
                draw.polygon(self._triangle(xy, int(rng.integers(4))), fill=fill)
            placed.append(box)
            labels.append(((x0 + w / 2) / s, (y0 + h / 2) / s, w / s, h / s, cls))
        image = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return image, np.array(labels, dtype=np.float32).reshape(-1, 5)

    @staticmethod
    def _triangle(xy, direction: int):
        """An isosceles triangle filling the box, apex pointing up/right/down/left."""
        x0, y0, x1, y1 = xy
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        return [
            [(xm, y0), (x1, y1), (x0, y1)],
            [(x1, ym), (x0, y1), (x0, y0)],
            [(xm, y1), (x0, y0), (x1, y0)],
            [(x0, ym), (x1, y0), (x1, y1)],
        ][direction]


def write_darknet_dataset(dataset: SyntheticDetection, outdir: str | Path, name: str) -> Path:
    """Write the dataset to disk in darknet layout, for inspection or for other tools.

    Creates ``outdir/images/<name>_<i>.png``, ``outdir/labels/<name>_<i>.txt`` and the list file
    ``outdir/<name>.txt`` (absolute image paths), and returns the list file's path.
    """
    out = Path(outdir).resolve()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(dataset)):
        image, boxes = dataset[i]
        p = out / "images" / f"{name}_{i:06d}.png"
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(p)
        write_labels(out / "labels" / f"{name}_{i:06d}.txt", boxes)
        paths.append(str(p))
    lst = out / f"{name}.txt"
    lst.write_text("\n".join(paths) + "\n")
    return lst
