"""Darknet's detection-training augmentation: jitter crop, horizontal flip, HSV distortion.

Ref: darknet src/data.c ``load_data_detection`` (the YOLOv2 crop-jitter version),
``correct_boxes``, ``fill_truth_detection``; src/image.c ``crop_image``,
``random_distort_image``, ``rand_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

from model.image import resize_image

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    """Augmentation parameters (darknet's ``jitter``, ``hue``, ``saturation``, ``exposure``).

    ``Augment.off()`` only resizes to the network input: reproducible, no randomness used.
    """

    jitter: float = 0.2
    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: bool = True

    @classmethod
    def off(cls) -> Augment:
        return cls(jitter=0.0, hue=0.0, saturation=1.0, exposure=1.0, flip=False)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, w: int, h: int,
                 rng: np.random.Generator):
        """Augment one image and its boxes and resize to the network input.

        Parameters
        ----------
        image : float32 array, shape (3, H, W), values in [0, 1]
        boxes : float32 array, shape (n, 5)
            ``(x, y, w, h, class)``, normalized.
        w, h : int
            Network input size.
        rng : numpy Generator

        Returns
        -------
        image : float32 array, shape (3, h, w)
        boxes : float32 array, shape (m, 5)
            Moved with the crop and flip, clipped to the image; boxes thinner than 0.001 dropped.
        """
        _, oh, ow = image.shape
        dw, dh = int(ow * self.jitter), int(oh * self.jitter)
        # darknet: int pleft = rand_uniform(-dw, dw), truncated toward zero.
        pleft, pright = (int(v) for v in rng.uniform(-dw, dw, 2)) if dw else (0, 0)
        ptop, pbot = (int(v) for v in rng.uniform(-dh, dh, 2)) if dh else (0, 0)
        sw, sh = ow - pleft - pright, oh - ptop - pbot
        # crop_image clamps coordinates: pixels outside the image repeat its border.
        rows = np.clip(np.arange(sh) + ptop, 0, oh - 1)
        cols = np.clip(np.arange(sw) + pleft, 0, ow - 1)
        out = resize_image(image[:, rows][:, :, cols], w, h)
        flip = bool(self.flip and rng.integers(2))
        if flip:
            out = out[:, :, ::-1]
        if self.hue or self.saturation != 1 or self.exposure != 1:
            out = self._distort(out, rng)
        return np.ascontiguousarray(out, np.float32), self._correct(boxes, pleft, ptop, sw, sh,
                                                                   ow, oh, flip)

    def _distort(self, im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        def rand_scale(s):
            scale = rng.uniform(1, s) if s > 1 else 1.0
            return scale if rng.integers(2) else 1.0 / scale

        dhue = rng.uniform(-self.hue, self.hue) if self.hue else 0.0
        dsat, dexp = rand_scale(self.saturation), rand_scale(self.exposure)
        hsv = rgb_to_hsv(np.clip(im.transpose(1, 2, 0), 0, 1))
        hsv[..., 0] = (hsv[..., 0] + dhue) % 1.0
        hsv[..., 1] *= dsat
        hsv[..., 2] *= dexp
        return np.clip(hsv_to_rgb(np.clip(hsv, 0, None)), 0, 1).transpose(2, 0, 1)

    @staticmethod
    def _correct(boxes, pleft, ptop, sw, sh, ow, oh, flip):
        b = np.asarray(boxes, np.float64).reshape(-1, 5)
        sx, sy = sw / ow, sh / oh
        dx, dy = (pleft / ow) / sx, (ptop / oh) / sy
        left = (b[:, 0] - b[:, 2] / 2) / sx - dx
        right = (b[:, 0] + b[:, 2] / 2) / sx - dx
        top = (b[:, 1] - b[:, 3] / 2) / sy - dy
        bottom = (b[:, 1] + b[:, 3] / 2) / sy - dy
        if flip:
            left, right = 1 - right, 1 - left
        left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
        top, bottom = np.clip(top, 0, 1), np.clip(bottom, 0, 1)
        out = np.stack([(left + right) / 2, (top + bottom) / 2, right - left, bottom - top,
                        b[:, 4]], axis=1)
        keep = (out[:, 2] >= 0.001) & (out[:, 3] >= 0.001)
        return out[keep].astype(np.float32)
