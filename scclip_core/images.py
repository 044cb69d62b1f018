"""Reading whatever users hand us: image files (header checks first), PIL images in any mode, numpy arrays."""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, TiffImagePlugin

from .errors import InputError

MAX_READ_PIXELS = 400_000_000
_ARRAY_MODES = ("RGB", "RGBA", "L", "LA", "1", "I", "F")
_EXIF_ORIENTATION = 0x0112
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)
_PILLOW_LIMIT = threading.Lock()  # Pillow's own pixel limit is a global: one reader at a time changes it


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"the image is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is "
            f"{max_pixels / 1e6:.0f} megapixels. Please downscale it first."
        )


def open_image(path: str | Path, max_pixels: int = MAX_READ_PIXELS) -> Image.Image:
    """The image file with only its header read: missing, unreadable, empty and oversized files are refused
    before a single pixel is decoded (a 12000x12000 PNG costs nothing to refuse)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} not found")
    try:
        with _PILLOW_LIMIT, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
            try:
                image = Image.open(path)
                image.size  # noqa: B018 - the header is read lazily
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Image.DecompressionBombError as error:
        raise InputError(
            f"{path.name} is too large to open safely ({error}); the limit is {max_pixels / 1e6:.0f} megapixels. "
            "Please downscale it first."
        ) from error
    except Exception as error:  # a malformed header can fail in any way
        raise InputError(
            f"could not read the file as an image ({path.name}: {type(error).__name__}); use a JPEG, PNG, WebP, GIF, "
            "BMP or TIFF"
        ) from error
    _check_pixels(*image.size, max_pixels)
    return image


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright) from what opening the file already read: TIFF tags, or the EXIF block
    that JPEG, WebP and PNG (an eXIf chunk before the pixel data) keep in `info`. Never decodes pixels."""
    try:
        if isinstance(image, TiffImagePlugin.TiffImageFile):
            stored = (image.tag_v2.get(_TIFF_WIDTH), image.tag_v2.get(_TIFF_HEIGHT))
            orientation = int(image.tag_v2.get(_EXIF_ORIENTATION, 1))
            return orientation if image.size == stored else 1  # newer Pillow reports TIFF sizes upright already
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def probe_size(path: str | Path, max_pixels: int = MAX_READ_PIXELS) -> tuple[int, int]:
    """The (width, height) an image file shows upright (EXIF orientation applied), from its header alone;
    refused as `open_image` refuses."""
    with open_image(path, max_pixels) as image:
        width, height = image.size
        orientation = _header_orientation(image)
    return (height, width) if orientation in _ROTATED_ORIENTATIONS else (width, height)


def fingerprint(rgb: np.ndarray) -> str:
    """A digest of an array's pixels and shape: equal digests, equal images."""
    digest = hashlib.blake2b(rgb.tobytes(), digest_size=16)
    digest.update(str(rgb.shape).encode())
    return digest.hexdigest()


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map integer or float pixel values of any range onto 0..255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if peak <= 1.0 else (255.0 / peak if peak > 255.0 else 1.0)
        return np.clip(finite * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        peak = int(array.max()) if array.size else 0
        if array.dtype.itemsize == 2 or peak > 255:
            scale = 255.0 / max(peak, 65535)
            return np.clip(array.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    raise InputError(f"unsupported pixel type {array.dtype}")


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float32)[..., None] / 255.0
    return (rgb.astype(np.float32) * weight + 255.0 * (1.0 - weight)).round().astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        gray = _scale_to_uint8(array)
        return np.repeat(gray[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise InputError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    scaled = _scale_to_uint8(array)
    if scaled.shape[2] == 2:
        return _composite_on_white(np.repeat(scaled[..., :1], 3, axis=2), scaled[..., 1])
    if scaled.shape[2] == 4:
        return _composite_on_white(scaled[..., :3], scaled[..., 3])
    return scaled


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode in ("PA", "RGBa", "La"):
            image = image.convert("RGBA")
        if image.mode in _ARRAY_MODES or image.mode.startswith("I;16"):
            return _array_to_rgb(np.asarray(image))
        return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"could not decode the image: {error}") from error


def to_rgb_array(image: object) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a path, a PIL image in any mode (EXIF orientation applied) or an array.

    Files and PIL images are refused above MAX_READ_PIXELS. Transparent pixels are composited over white;
    16-bit and float images are scaled to 0..255.
    """
    if isinstance(image, (str, Path)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, MAX_READ_PIXELS)
        rgb = _pil_to_rgb(image)
    elif isinstance(image, np.ndarray):
        rgb = _array_to_rgb(image)
    elif image is None:
        raise InputError("no image given")
    else:
        raise InputError(f"cannot read an image from a {type(image).__name__}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"the image is empty ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    return np.ascontiguousarray(rgb)


def cap_size(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, str | None]:
    """Downscale so the long side is at most `max_side` (antialiased); the notice says so when it happens."""
    height, width = rgb.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return rgb, None
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
    return resized, f"image downscaled from {width}x{height} to {size[0]}x{size[1]} (size cap {max_side} px)"
