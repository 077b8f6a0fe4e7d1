"""Image augmentation with OpenCV and NumPy (no framework ops), then normalisation.

Training: random resized crop (a random region of ``scale`` x the area and ``ratio``
aspect, resized to the model size) and a horizontal flip with probability 1/2. Evaluation:
the centre ``image_size`` square when the stored images are larger (the usual "resize 256,
centre crop 224"), else a resize. Then a normalisation to float32, defined once in
:mod:`kerasml.preprocessing` (``"imagenet"``, ``"caffe"``, ``"tf"``, ``"unit"``, ``"none"``, or a
backbone name for that backbone's own preprocessing); :class:`Normalization`,
:data:`NORMALIZATIONS` and :func:`get_normalization` are re-exported from there.
"""

import math

import numpy as np

from kerasml._validation import check_choice
from kerasml.preprocessing import NORMALIZATIONS, Normalization, get_normalization

__all__ = ["CROPS", "DTYPES", "NORMALIZATIONS", "Augment", "Normalization", "get_normalization"]

CROPS = ("resized", "random")
#: What `Augment` returns: normalised float32 images, or the uint8 pixels (normalised in the model).
DTYPES = ("float32", "uint8")


class Augment:
    """Batch augmentation for metric learning, on uint8 RGB images.

    Args:
        image_size: the model's input side in pixels. Defaults to 224.
        scale: area range of the random resized crop. Defaults to ``(0.16, 1.0)``.
        ratio: aspect-ratio range of the crop. Defaults to ``(3/4, 4/3)``.
        flip: random horizontal flips. Defaults to ``True``.
        normalization: see :func:`kerasml.preprocessing.get_normalization`. Defaults to ``"imagenet"``.
        crop: ``"resized"`` (random resized crop, default) or ``"random"`` (a plain random
            ``image_size`` crop of the stored image, e.g. 227 of 256 as in the HDML code).
        dtype: ``"float32"`` (default): normalised float32 images; ``"uint8"``: the crops as uint8
            pixels, not normalised (``normalization`` is not applied here: a model built with
            ``MetricModel(..., input_normalization=...)`` applies it), 4x fewer bytes per batch.

    Example:

    >>> import numpy as np
    >>> augment = Augment(image_size=24, normalization="unit")
    >>> images = np.zeros((2, 32, 32, 3), np.uint8)
    >>> augment.train(images, np.random.default_rng(0)).shape
    (2, 24, 24, 3)
    """

    def __init__(
        self,
        image_size=224,
        *,
        scale=(0.16, 1.0),
        ratio=(3 / 4, 4 / 3),
        flip=True,
        normalization="imagenet",
        crop="resized",
        dtype="float32",
    ):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise ValueError(f"Invalid value for argument `image_size`. Expected an int >= 1. Received: {image_size!r}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"Invalid value for argument `scale`. Expected 0 < low <= high <= 1. Received: {scale!r}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"Invalid value for argument `ratio`. Expected 0 < low <= high. Received: {ratio!r}")
        check_choice("crop", crop, CROPS)
        check_choice("dtype", dtype, DTYPES)
        self.image_size = int(image_size)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.flip = bool(flip)
        self.normalization = get_normalization(normalization)
        self.crop = crop
        self.dtype = dtype

    def __repr__(self):
        return (
            f"Augment(image_size={self.image_size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip}, "
            f"crop={self.crop!r}, normalization={self.normalization}, dtype={self.dtype!r})"
        )

    def _box(self, height, width, rng):
        """A random crop ``(top, left, h, w)``: torchvision's RandomResizedCrop rule."""
        if self.crop == "random":
            h, w = min(self.image_size, height), min(self.image_size, width)
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        # fallback: the central crop of the closest allowed aspect ratio
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def _resize(self, image):
        import cv2

        size = self.image_size
        if image.shape[0] == size and image.shape[1] == size:
            return image
        shrink = image.shape[0] > size and image.shape[1] > size
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def _finish(self, pixels):
        if self.dtype == "uint8":
            return np.ascontiguousarray(pixels, np.uint8)
        return self.normalization(pixels)

    def train(self, images, rng):
        """Augment a batch for training.

        Args:
            images: ``uint8 [B, H, W, 3]`` RGB.
            rng: a NumPy ``Generator`` (the batch's randomness: seed it for determinism).

        Returns:
            float32 ``[B, image_size, image_size, 3]``, normalised (uint8 pixels with ``dtype="uint8"``).
        """
        out = np.empty((len(images), self.image_size, self.image_size, 3), np.uint8)
        for i, image in enumerate(images):
            top, left, h, w = self._box(image.shape[0], image.shape[1], rng)
            crop = self._resize(image[top : top + h, left : left + w])
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i] = crop
        return self._finish(out)

    def eval(self, images):
        """Deterministic evaluation transform: centre ``image_size`` crop (or resize), normalised.

        Args:
            images: ``uint8 [B, H, W, 3]`` RGB.

        Returns:
            float32 ``[B, image_size, image_size, 3]``, normalised (uint8 pixels with ``dtype="uint8"``).
        """
        size = self.image_size
        height, width = images.shape[1:3]
        if height >= size and width >= size:
            top, left = (height - size) // 2, (width - size) // 2
            out = images[:, top : top + size, left : left + size]
        else:
            out = (
                np.stack([self._resize(image) for image in images])
                if len(images)
                else np.zeros((0, size, size, 3), np.uint8)
            )
        return self._finish(out)
