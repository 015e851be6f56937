"""The one image reader: GrabCut, the mapper, export, predict and the visualizers all read through
:func:`read_image`, so a label map and the image the model sees can never disagree (cv2.imread ignores EXIF
orientation; detectron2's reader applies it).

Pixels are exactly those of ``detectron2.data.detection_utils.read_image`` (PIL decoding, EXIF orientation
applied) for every file that reader handles correctly. Where it does not, this one differs on purpose:
- a truncated or undecodable file raises :class:`ImageReadError` naming the file (PIL's own ``OSError: image
  file is truncated`` does not name it, and ``cv2.imread`` silently decodes the readable part);
- a 16-bit grey PNG (PIL mode ``I;16``) is scaled to 8 bit (``round(v / 257)``) instead of clipped to white;
  16-bit RGB PNGs are already reduced to 8 bit by PIL (the high byte);
- other modes without an 8-bit meaning (32-bit integer ``I``, float ``F``) are refused by name.
"""
import numpy as np
from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_REFUSED = ("I", "F")


class ImageReadError(ValueError):
    """An image file that is missing, truncated, undecodable or of an unsupported kind; the message names it."""


def read_image(path, format="BGR"):
    """HxWx3 uint8 (HxWx1 for ``format="L"``) of the image at ``path``, EXIF orientation applied.

    Raises :class:`ImageReadError` naming ``path`` for a missing, truncated, undecodable or unsupported file.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageReadError(f"cannot check {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set by some other code, "
                             "so truncated images would pass silently")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file raises here, not later without its name
            image = _apply_exif_orientation(image)
            if image.mode in _SIXTEEN_BIT:
                grey = np.asarray(image).astype(np.float64)
                image = Image.fromarray(np.rint(grey / 257.0).astype(np.uint8), mode="L")
            elif image.mode in _REFUSED:
                raise ImageReadError(f"image {path} has PIL mode {image.mode!r} (32-bit integer or float pixels), "
                                     "which has no 8-bit meaning; convert it to 8-bit RGB or grey")
            array = convert_PIL_to_numpy(image, format)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise ImageReadError(f"cannot read image {path}: it does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"cannot read image {path}: truncated or corrupt ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(array)
