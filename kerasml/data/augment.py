"""Image augmentation and normalisation with OpenCV and NumPy (no framework ops).

Training: random resized crop (a random region of ``scale`` x the area and ``ratio``
aspect, resized to the model size) and a horizontal flip with probability 1/2. Evaluation:
the centre ``image_size`` square when the stored images are larger (the usual "resize 256,
centre crop 224"), else a resize. Then per-backbone normalisation to float32.

Normalisations (:data:`NORMALIZATIONS`):

============ ============================================================== ====================
name         maths on RGB uint8 ``x``                                        used by
============ ============================================================== ====================
``imagenet`` ``(x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]`` torchvision weights
``caffe``    BGR order, ``x - [103.939, 116.779, 123.68]``                   VGG/ResNet (keras)
``tf``       ``x / 127.5 - 1``                                               MobileNet, Inception
``unit``     ``x / 255``                                                     small CNNs
``none``     ``x`` as float32                                                models that normalise
============ ============================================================== ====================

A backbone name (``normalization="googlenet"``) takes the backbone's own preprocessing from
``kerasml.models.backbones.preprocessing``.
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["NORMALIZATIONS", "Augment", "Normalization", "get_normalization"]


@dataclass(frozen=True)
class Normalization:
    """``(x[..., order] * scale - mean) / std`` on uint8 RGB images, as float32.

    Attributes:
        mean: per-channel mean (after ``scale``, in the output channel order).
        std: per-channel standard deviation.
        scale: multiplies the uint8 values first (``1/255`` for [0, 1]).
        bgr: reverse the channels to BGR first.
    """

    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    scale: float = 1.0
    bgr: bool = False

    def __call__(self, images):
        """Normalise ``uint8 [..., 3]`` RGB images to float32."""
        if self.bgr:
            images = images[..., ::-1]
        a = (self.scale / np.asarray(self.std, np.float32)).astype(np.float32)
        b = (-np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)).astype(np.float32)
        out = np.multiply(images, a, dtype=np.float32)  # uint8 -> float32 and scale in one pass
        out += b
        return out


NORMALIZATIONS = {
    "imagenet": Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0 / 255.0),
    "caffe": Normalization((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 1.0, bgr=True),
    "tf": Normalization((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1.0 / 127.5),
    "unit": Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0 / 255.0),
    "none": Normalization(),
}


def _from_preprocessing(pre):
    """A :class:`Normalization` from a ``kerasml.models.backbones.Preprocessing``-like object."""
    mean, std = tuple(pre.mean), tuple(pre.std)
    mean = mean * 3 if len(mean) == 1 else mean
    std = std * 3 if len(std) == 1 else std
    return Normalization(mean, std, float(pre.scale), bgr=str(pre.channel_order).upper() == "BGR")


def get_normalization(spec):
    """A :class:`Normalization` from a name, a backbone name, a ``(mean, std)`` pair or an object.

    Args:
        spec: a key of :data:`NORMALIZATIONS`; a backbone name (``"googlenet"``,
            ``"small_cnn"``, a ``keras.applications`` name), resolved with
            ``kerasml.models.backbones.preprocessing``; a ``Preprocessing`` of that module
            (anything with ``mean``, ``std``, ``scale``, ``channel_order``); a ``(mean, std)``
            pair on the [0, 1] scale; a :class:`Normalization`; or ``None`` (``"none"``).

    Raises:
        ValueError: for an unknown name or a malformed pair.
    """
    if spec is None:
        return NORMALIZATIONS["none"]
    if isinstance(spec, Normalization):
        return spec
    if all(hasattr(spec, key) for key in ("mean", "std", "scale", "channel_order")):
        return _from_preprocessing(spec)
    if isinstance(spec, str):
        key = spec.lower()
        if key in NORMALIZATIONS:
            return NORMALIZATIONS[key]
        try:
            from kerasml.models import backbones

            return _from_preprocessing(backbones.preprocessing(spec))
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(
                f"Invalid value for argument `normalization`. Expected one of {sorted(NORMALIZATIONS)}, a backbone "
                f"name (e.g. 'googlenet', 'small_cnn', 'ResNet50') or a (mean, std) pair. Received: {spec!r}"
            ) from error
    try:
        mean, std = spec
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if not len(mean) == len(std) == 3:
            raise ValueError("need 3 values each")
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Invalid value for argument `normalization`. Expected a name or a (mean, std) pair of 3 floats each "
            f"on the [0, 1] scale. Received: {spec!r}"
        ) from error
    return Normalization(mean, std, 1.0 / 255.0)


class Augment:
    """Batch augmentation for metric learning, on uint8 RGB images.

    Args:
        image_size: the model's input side in pixels. Defaults to 224.
        scale: area range of the random resized crop. Defaults to ``(0.16, 1.0)``.
        ratio: aspect-ratio range of the crop. Defaults to ``(3/4, 4/3)``.
        flip: random horizontal flips. Defaults to ``True``.
        normalization: see :func:`get_normalization`. Defaults to ``"imagenet"``.
        crop: ``"resized"`` (random resized crop, default) or ``"random"`` (a plain random
            ``image_size`` crop of the stored image, e.g. 227 of 256 as in the HDML code).

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
    ):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise ValueError(f"Invalid value for argument `image_size`. Expected an int >= 1. Received: {image_size!r}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"Invalid value for argument `scale`. Expected 0 < low <= high <= 1. Received: {scale!r}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"Invalid value for argument `ratio`. Expected 0 < low <= high. Received: {ratio!r}")
        if crop not in ("resized", "random"):
            raise ValueError(f"Invalid value for argument `crop`. Expected 'resized' or 'random'. Received: {crop!r}")
        self.image_size = int(image_size)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.flip = bool(flip)
        self.normalization = get_normalization(normalization)
        self.crop = crop

    def __repr__(self):
        return (
            f"Augment(image_size={self.image_size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip}, "
            f"crop={self.crop!r}, normalization={self.normalization})"
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

    def train(self, images, rng):
        """Augment a batch for training.

        Args:
            images: ``uint8 [B, H, W, 3]`` RGB.
            rng: a NumPy ``Generator`` (the batch's randomness: seed it for determinism).

        Returns:
            float32 ``[B, image_size, image_size, 3]``, normalised.
        """
        out = np.empty((len(images), self.image_size, self.image_size, 3), np.uint8)
        for i, image in enumerate(images):
            top, left, h, w = self._box(image.shape[0], image.shape[1], rng)
            crop = self._resize(image[top : top + h, left : left + w])
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i] = crop
        return self.normalization(out)

    def eval(self, images):
        """Deterministic evaluation transform: centre ``image_size`` crop (or resize), normalised.

        Args:
            images: ``uint8 [B, H, W, 3]`` RGB.

        Returns:
            float32 ``[B, image_size, image_size, 3]``.
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
        return self.normalization(out)
