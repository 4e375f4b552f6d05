"""Image loading, darknet's letterbox, and drawing detections.

Images are float32 ``(3, H, W)`` arrays in [0, 1], RGB, CHW (darknet's ``image`` layout).
Ref: darknet src/image.c.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

if TYPE_CHECKING:
    from model.detect import Detection

__all__ = ["MAX_IMAGE_PIXELS", "draw_detections", "letterbox", "load_image", "resize_image"]

_F32 = np.float32
# Modes Pillow converts to RGB the way darknet's stb_image does when asked for 3 channels:
# grey (1-bit too) is replicated, alpha is dropped, palettes are expanded. Pillow already reads
# 16-bit RGB PNGs as 8-bit RGB by keeping the high byte, as stb_image does.
_CONVERTIBLE_MODES = ("RGB", "RGBA", "L", "LA", "P", "1")
# 16-bit greyscale, which stb_image reduces to its high byte (``stbi__convert_16_to_8``).
_GREY16_MODES = ("I;16", "I;16L", "I;16B")
#: The most pixels :func:`load_image` accepts (8192 x 8192). Darknet has no limit, but the float32
#: image alone takes 12 bytes a pixel (768 MiB at the limit); more is a mistake or an attack.
MAX_IMAGE_PIXELS = 1 << 26


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as darknet's ``load_image_color`` does.

    ``1``, ``L``, ``LA``, ``P`` (palette) and ``RGBA`` images are converted to RGB (grey
    replicated to the three channels, alpha dropped, palette expanded), as stb_image does for
    darknet; 16-bit greyscale and 16-bit RGB keep the high byte of each sample, as stb_image does.
    Other modes (32-bit integer, float, CMYK, ...) are rejected, and so are files of more than
    :data:`MAX_IMAGE_PIXELS` pixels. EXIF orientation is ignored, as in darknet.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    float32 array, shape (3, H, W)
        ``float(v / 255.)`` per 8-bit sample, the division in double as darknet's
        ``(float)data[i]/255.``. Ref: darknet src/image.c ``load_image_stb``.

    Raises
    ------
    ValueError
        If the file is not an image Pillow can read (empty images included: no format Pillow
        reads stores one), is corrupt or truncated, has an unsupported mode or too many pixels;
        the message names the file and, once its header is read, its size, format and mode.
    OSError
        If the file cannot be opened (the message names it).
    """
    spath = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 M pixels on; the size check below refuses those files anyway,
            # and the user should see one message, not two.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(spath)
    except UnidentifiedImageError:
        raise ValueError(f"{spath}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{spath}: {exc} Owlet loads at most {MAX_IMAGE_PIXELS}.") from None
    with img:
        width, height = img.size
        what = f"{spath}: {width}x{height} {img.format} image, mode {img.mode!r}"
        if img.mode not in _CONVERTIBLE_MODES + _GREY16_MODES:
            raise ValueError(f"{what}: unsupported mode (Owlet reads "
                             f"{', '.join(_CONVERTIBLE_MODES)} and 16-bit grey, as darknet)")
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{what}: {width * height} pixels, more than the "
                             f"{MAX_IMAGE_PIXELS} Owlet loads")
        try:
            if img.mode in _GREY16_MODES:
                grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
                rgb = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, EOFError) as exc:
            # Pillow decodes the pixels only now: a damaged file passes the header checks above.
            raise ValueError(f"{what}: corrupt or truncated ({exc})") from None
    return (rgb.transpose(2, 0, 1) / 255.0).astype(_F32)


def _interpolation(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """darknet's source indices and weights along one axis of ``resize_image``.

    ``scale = (float)(n_in - 1) / (n_out - 1)``; output ``i`` reads ``s = i * scale`` (float32),
    ``k = (int)s``, ``d = s - k``.

    Returns
    -------
    k, k_next : int arrays, shape (n_out,)
        Source index and its neighbour, clamped to the edge (where darknet never reads it).
    d : float32 array, shape (n_out,)
    """
    if n_out == 1:
        # darknet divides by zero (and then reads index (int)NaN); take the first sample.
        zero = np.zeros(1, np.int64)
        return zero, zero, np.zeros(1, _F32)
    scale = _F32(n_in - 1) / _F32(n_out - 1)
    s = np.arange(n_out).astype(_F32) * scale
    k = s.astype(np.int64)  # C's (int) truncates; s >= 0
    return k, np.minimum(k + 1, n_in - 1), s - k.astype(_F32)


def resize_image(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet's bilinear ``resize_image``: a horizontal pass, then a vertical one, in float32.

    Parameters
    ----------
    img : float32 array, shape (C, H, W)
    w, h : int
        Output width and height.

    Returns
    -------
    float32 array, shape (C, h, w)
        Pass 1: ``part[:, r, c] = (1 - dx) * im[:, r, ix] + dx * im[:, r, ix + 1]``, except that
        the last column copies the last input column. Pass 2: ``out[:, r] = (1 - dy) *
        part[:, iy]``, then ``+= dy * part[:, iy + 1]`` on every row but the last (darknet skips
        it there even when ``dy > 0``). Every product and sum is rounded to float32 in that order.
        Ref: darknet src/image.c ``resize_image``.
    """
    img = np.asarray(img, _F32)
    im_h = img.shape[1]
    ix, ix1, dx = _interpolation(img.shape[2], w)
    part = (_F32(1) - dx) * img[:, :, ix] + dx * img[:, :, ix1]
    part[:, :, w - 1] = img[:, :, -1]
    iy, iy1, dy = _interpolation(im_h, h)
    out = (_F32(1) - dy)[:, None] * part[:, iy, :]
    rows = slice(0, h - 1 if im_h > 1 else 0)
    out[:, rows] += dy[rows, None] * part[:, iy1[rows], :]
    return out


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet's ``letterbox_image``: resize keeping the aspect ratio, centre on a 0.5 canvas.

    Parameters
    ----------
    img : float32 array, shape (C, H, W)
    w, h : int
        The network input width and height.

    Returns
    -------
    float32 array, shape (C, h, w)
        The image resized (:func:`resize_image`) to ``new_w x new_h`` -- ``new_w = w``,
        ``new_h = (H * w) // W`` when ``(float)w/W < (float)h/H``, else ``new_h = h``,
        ``new_w = (W * h) // H`` -- placed at ``((w - new_w) // 2, (h - new_h) // 2)``; the rest
        is 0.5. Ref: darknet src/image.c ``letterbox_image``, ``embed_image``.

    Raises
    ------
    ValueError
        If the image is so narrow that it shrinks to no row or no column (``new_w`` or ``new_h``
        is 0): darknet would run on an empty canvas and divide by zero decoding the boxes.
    """
    c, im_h, im_w = img.shape
    if _F32(w) / _F32(im_w) < _F32(h) / _F32(im_h):
        new_w, new_h = w, (im_h * w) // im_w
    else:
        new_w, new_h = (im_w * h) // im_h, h
    if new_w == 0 or new_h == 0:
        raise ValueError(f"a {im_w}x{im_h} image letterboxes to {new_w}x{new_h} in the {w}x{h} "
                         "network input: nothing of it is left to detect on")
    boxed = np.full((c, h, w), 0.5, _F32)
    top, left = (h - new_h) // 2, (w - new_w) // 2
    boxed[:, top : top + new_h, left : left + new_w] = resize_image(img, new_w, new_h)
    return boxed


def _class_color(cls: int, classes: int) -> tuple[int, int, int]:
    """darknet's per-class box colour (``get_color`` with ``offset = cls*123457 % classes``)."""
    corners = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]], float)
    offset = cls * 123457 % classes
    ratio = offset / classes * 5
    i, j = int(np.floor(ratio)), int(np.ceil(ratio))
    rgb_reversed = (1 - (ratio - i)) * corners[i] + (ratio - i) * corners[j]
    red, green, blue = rgb_reversed[2], rgb_reversed[1], rgb_reversed[0]
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_detections(
    image: str | os.PathLike | np.ndarray,
    detections: Sequence[Detection],
    names: Sequence[str],
    out_png: str | os.PathLike,
    thresh: float = 0.0,
) -> None:
    """Draw labelled boxes on an image and save it as PNG, like darknet's ``draw_detections``.

    Parameters
    ----------
    image : path, or float array of shape (3, H, W) in [0, 1]
    detections : sequence of Detection
        Boxes relative to the image (``x, y`` centre, ``w, h`` size, all in [0, 1] units).
    names : sequence of str
        Class names, ``len(names) == len(det.probs)``.
    out_png : path
    thresh : float
        A detection is drawn if some class has ``prob > thresh``; its label lists those classes
        with their probabilities, its colour is that of the first such class.
    """
    rgb = load_image(image) if isinstance(image, str | os.PathLike) else np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {rgb.shape}")
    canvas = Image.fromarray(
        np.clip(np.rint(rgb.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8), "RGB"
    )
    im_h, im_w = rgb.shape[1:]
    draw = ImageDraw.Draw(canvas)
    width = max(1, int(im_h * 0.006))
    for det in detections:
        probs = np.asarray(det.probs)
        if len(probs) != len(names):
            raise ValueError(f"{len(probs)} class probabilities but {len(names)} names")
        shown = [j for j in range(len(names)) if probs[j] > thresh]
        if not shown:
            continue
        # Ref: darknet src/image.c ``draw_detections``: C's (int) truncation, then clamping.
        left = max(0, int((det.x - det.w / 2) * im_w))
        right = min(im_w - 1, int((det.x + det.w / 2) * im_w))
        top = max(0, int((det.y - det.h / 2) * im_h))
        bottom = min(im_h - 1, int((det.y + det.h / 2) * im_h))
        if right < left or bottom < top:
            continue  # outside the image or of negative size: darknet's draw_box draws nothing
        color = _class_color(shown[0], len(names))
        draw.rectangle([left, top, right, bottom], outline=color, width=width)
        label = ", ".join(f"{names[j]} {probs[j]:.0%}" for j in shown)
        text_box = draw.textbbox((left, top), label)
        draw.rectangle(text_box, fill=color)
        draw.text((left, top), label, fill=(0, 0, 0))
    canvas.save(out_png, format="PNG")
