"""Image normalisations: the one definition of each, for the data pipeline and the backbones.

Layer L0: imports nothing from kerasml but `kerasml._validation`, and NumPy only at import
time (Keras is imported when a `keras.applications` name is looked up), so the data
pipeline's workers and the command line can use it without starting a framework.

Every normalisation maps RGB images on the 0–255 scale (uint8 or float) to float32::

    x = images[..., ::-1] if channel_order == "BGR" else images
    out[..., c] = (x[..., c] * scale - mean[c]) / std[c]

Named normalisations (:data:`NORMALIZATIONS`):

============ ================================================================ ==================================
name         maths on RGB ``x`` in [0, 255]                                   used by
============ ================================================================ ==================================
``imagenet`` ``(x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]``   googlenet ``"bn"``, torchvision
``caffe``    BGR order, ``x - [103.939, 116.779, 123.68]``                     VGG/ResNet (keras.applications)
``tf``       ``x / 127.5 - 1``                                                 small_cnn, MobileNet, Inception
``unit``     ``x / 255``                                                       plain [0, 1] inputs
``none``     ``x`` as float32                                                  models that normalise inside
============ ================================================================ ==================================

Each backbone expects one of them (`backbone_normalization`): kerasml's own backbones by
the table above (googlenet ``variant="caffe"``, the BVLC weights of the HDML authors, takes
BGR minus ``(104, 117, 123)``), a `keras.applications` model whatever its own
``preprocess_input`` computes.

Example:

>>> import numpy as np
>>> get_normalization("tf")(np.array([[[0, 255, 51]]], np.uint8)).round(4)
array([[[-1. ,  1. , -0.6]]], dtype=float32)
>>> backbone_normalization("googlenet") == NORMALIZATIONS["imagenet"]
True
"""

import dataclasses
import functools
import re
import types

import numpy as np

from kerasml._validation import check_choice, did_you_mean

CHANNEL_ORDERS = ("RGB", "BGR")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """``(x[..., channel_order] * scale - mean) / std`` on RGB images on the 0–255 scale, as float32.

    ``mean`` and ``std`` are in the units of ``x * scale`` and in ``channel_order``; a 1-tuple
    applies to every channel (so the same normalisation serves greyscale and colour images).

    Args:
        mean: per-channel values subtracted after scaling. Defaults to ``(0.0,)``.
        std: per-channel divisors. Defaults to ``(1.0,)``.
        channel_order: ``"RGB"`` or ``"BGR"``, the order the network expects (the input is
            always RGB; ``"BGR"`` reverses the channels first). Defaults to ``"RGB"``.
        scale: factor applied first, e.g. ``1/255``. Defaults to ``1.0``.

    Raises:
        ValueError: for a ``channel_order`` other than ``"RGB"`` and ``"BGR"``.

    Example:

    >>> import numpy as np
    >>> caffe = Normalization(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    >>> caffe(np.array([[[255, 0, 0]]], np.uint8))
    array([[[-104., -117.,  132.]]], dtype=float32)
    """

    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    channel_order: str = "RGB"
    scale: float = 1.0

    def __post_init__(self):
        check_choice("channel_order", self.channel_order, CHANNEL_ORDERS)
        object.__setattr__(self, "mean", tuple(float(m) for m in np.ravel(self.mean)))
        object.__setattr__(self, "std", tuple(float(s) for s in np.ravel(self.std)))
        object.__setattr__(self, "scale", float(self.scale))
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(
                "Invalid value for arguments `mean` and `std`. Expected the same number of channels (or one value "
                f"for all). Received: mean={self.mean}, std={self.std}"
            )
        if not all(s > 0 for s in self.std):
            raise ValueError(f"Invalid value for argument `std`. Expected values > 0. Received: std={self.std}")

    @property
    def bgr(self):
        """Whether the channels are reversed to BGR first."""
        return self.channel_order == "BGR"

    def __call__(self, images):
        """Normalise RGB images on the 0–255 scale.

        Args:
            images: an array ``[..., H, W, C]`` (uint8 or float), RGB, values in [0, 255].

        Returns:
            A float32 NumPy array of the same shape.
        """
        x = np.asarray(images)
        if self.bgr:
            x = x[..., ::-1]
        std = np.asarray(self.std, np.float64)
        # (x * scale - mean) / std as one multiply-add, converting uint8 to float32 in the same pass.
        slope = (self.scale / std).astype(np.float32)
        offset = (-np.asarray(self.mean, np.float64) / std).astype(np.float32)
        out = np.multiply(x, slope, dtype=np.float32)
        out += offset
        return out

    def apply(self, images):
        """The same as calling the normalisation (the name the backbones' docs use)."""
        return self(images)

    def to_config(self):
        """The fields as a plain dict (JSON/TOML friendly)."""
        return dataclasses.asdict(self)


IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications' "caffe" mode
CAFFE_GOOGLENET_MEAN_BGR = (104.0, 117.0, 123.0)  # the BVLC GoogLeNet's mean, rounded as its authors did

NORMALIZATIONS = {
    "imagenet": Normalization(mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, scale=1.0 / 255.0),
    "caffe": Normalization(mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0), channel_order="BGR"),
    "tf": Normalization(mean=(1.0,), std=(1.0,), scale=1.0 / 127.5),
    "unit": Normalization(mean=(0.0,), std=(1.0,), scale=1.0 / 255.0),
    "none": Normalization(),
}

# GoogLeNet variant -> normalisation: trained from scratch or from torchvision-style weights,
# standardised RGB; the BVLC Caffe weights (and the HDML authors), BGR minus the means, 0–255.
GOOGLENET_NORMALIZATIONS = {
    "bn": NORMALIZATIONS["imagenet"],
    "caffe": Normalization(mean=CAFFE_GOOGLENET_MEAN_BGR, std=(1.0, 1.0, 1.0), channel_order="BGR"),
    # torchvision's weights: ImageNet mean/std, then the model's transform_input layer maps to [-1, 1].
    "torchvision": NORMALIZATIONS["imagenet"],
}
SMALL_CNN_NORMALIZATION = NORMALIZATIONS["tf"]


def get_normalization(spec):
    """A `Normalization` from a name, a backbone name, a ``(mean, std)`` pair or an object.

    Args:
        spec: a key of :data:`NORMALIZATIONS`; a backbone name (``"googlenet"``,
            ``"small_cnn"``, a ``keras.applications`` name such as ``"ResNet50"``), for the
            normalisation that backbone expects (`backbone_normalization`); a `Normalization`;
            anything with ``mean``, ``std``, ``scale`` and ``channel_order`` attributes; a
            ``(mean, std)`` pair of 3 floats each on the [0, 1] scale (RGB); or ``None``
            (``"none"``).

    Returns:
        A `Normalization`.

    Raises:
        ValueError: for an unknown name or a malformed pair.

    Example:

    >>> get_normalization("unit").scale == 1 / 255
    True
    >>> get_normalization(((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))).std
    (0.25, 0.25, 0.25)
    """
    if spec is None:
        return NORMALIZATIONS["none"]
    if isinstance(spec, Normalization):
        return spec
    if all(hasattr(spec, key) for key in ("mean", "std", "scale", "channel_order")):
        return Normalization(
            mean=spec.mean, std=spec.std, channel_order=str(spec.channel_order).upper(), scale=spec.scale
        )
    if isinstance(spec, str):
        if spec.lower() in NORMALIZATIONS:
            return NORMALIZATIONS[spec.lower()]
        try:
            return backbone_normalization(spec)
        except ValueError as error:
            raise ValueError(
                f"Invalid value for argument `normalization`. Expected one of {tuple(NORMALIZATIONS)}, a backbone "
                f"name (e.g. 'googlenet', 'small_cnn', 'ResNet50') or a (mean, std) pair. Received: "
                f"normalization={spec!r}.{did_you_mean(spec.lower(), NORMALIZATIONS)}"
            ) from error
    try:
        mean, std = spec
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if not len(mean) == len(std) == 3:
            raise ValueError("need 3 values each")
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Invalid value for argument `normalization`. Expected a name or a (mean, std) pair of 3 floats each "
            f"on the [0, 1] scale. Received: normalization={spec!r}"
        ) from error
    return Normalization(mean=mean, std=std, scale=1.0 / 255.0)


# ----------------------------------------------------------------------------------------------
# Backbone names and the normalisation each backbone expects


def _key(name):
    """A name without case, spaces, ``_`` or ``-`` (``"MobileNet_V2"`` -> ``"mobilenetv2"``)."""
    return re.sub(r"[\s_\-]", "", str(name)).lower()


# kerasml's own backbones: spelling key -> canonical name.
_OWN_BACKBONES = {"googlenet": "googlenet", "inceptionv1": "googlenet", "smallcnn": "small_cnn"}


@functools.cache
def keras_applications():
    """Every model constructor in `keras.applications`, by name.

    Returns:
        ``{"ResNet50": keras.applications.ResNet50, ...}`` (imports Keras on first use).
    """
    import keras

    return {
        attr: value
        for attr, value in vars(keras.applications).items()
        if attr[:1].isupper() and callable(value) and not isinstance(value, type)
    }


@functools.cache
def _application_modules():
    """``{constructor name: public keras.applications submodule}`` (for ``preprocess_input``)."""
    import keras

    constructors = keras_applications()
    modules = {}
    for module in vars(keras.applications).values():
        if not isinstance(module, types.ModuleType) or not hasattr(module, "preprocess_input"):
            continue
        for attr, value in vars(module).items():
            if constructors.get(attr) is value:
                modules.setdefault(attr, module)
    # A few submodules (mobilenet_v3) export only preprocess_input: match them by the
    # last part of the constructor's defining module (keras.src is never imported).
    for attr, constructor in constructors.items():
        submodule = getattr(keras.applications, constructor.__module__.rsplit(".", 1)[-1], None)
        if attr not in modules and hasattr(submodule, "preprocess_input"):
            modules[attr] = submodule
    return modules


def backbone_names():
    """Every backbone name, in its canonical spelling.

    Returns:
        ``["googlenet", "small_cnn", <keras.applications models, sorted>...]``.
    """
    return ["googlenet", "small_cnn", *sorted(keras_applications())]


def canonical_backbone_name(name):
    """The canonical spelling of a backbone name.

    Lookups ignore case, spaces, ``_`` and ``-``; ``"inception_v1"`` is GoogLeNet.

    Args:
        name: e.g. ``"GoogLeNet"``, ``"small-cnn"``, ``"resnet50"``, ``"MobileNet_V2"``.

    Returns:
        ``"googlenet"``, ``"small_cnn"`` or a `keras.applications` constructor name such as
        ``"ResNet50"``.

    Raises:
        ValueError: for an unknown name, listing the known ones and the closest.

    Example:

    >>> canonical_backbone_name("Inception_V1")
    'googlenet'
    """
    key = _key(name)
    if key in _OWN_BACKBONES:
        return _OWN_BACKBONES[key]
    by_key = {_key(app): app for app in keras_applications()}
    if key in by_key:
        return by_key[key]
    hint = did_you_mean(name, backbone_names(), key=_key)
    raise ValueError(f"Unknown backbone {name!r}. Known names: {', '.join(backbone_names())}.{hint}")


def backbone_normalization(name, **kwargs):
    """The normalisation a backbone expects of its input images.

    - ``"googlenet"``: ``variant="bn"`` (default): ``"imagenet"``, RGB scaled to [0, 1],
      minus the ImageNet mean (0.485, 0.456, 0.406), divided by its std (0.229, 0.224,
      0.225); the same for ``variant="torchvision"`` (torchvision's weights, whose network
      maps it to [−1, 1] itself). ``variant="caffe"``: the BVLC/HDML convention, BGR on
      the 0–255 scale minus (104, 117, 123), no division.
    - ``"small_cnn"``: ``"tf"``, RGB (or grey) to [−1, 1].
    - a `keras.applications` name: whatever that model's own
      ``keras.applications.<module>.preprocess_input`` does ("caffe": BGR minus (103.939,
      116.779, 123.68); "torch": ImageNet mean/std on [0, 1]; "tf": [−1, 1]; models that
      rescale inside, such as EfficientNet, ConvNeXt and MobileNetV3, take 0–255 RGB
      unchanged). This is read off ``preprocess_input`` itself, so it follows Keras. It
      describes the models' defaults (``include_preprocessing=True`` where that exists).

    Args:
        name: a backbone name (see `canonical_backbone_name`).
        **kwargs: backbone arguments; only ``variant`` (googlenet) matters.

    Returns:
        A `Normalization`.

    Raises:
        ValueError: for an unknown name or googlenet variant.

    Example:

    >>> backbone_normalization("ResNet50").channel_order
    'BGR'
    >>> backbone_normalization("mobilenet_v2").mean
    (1.0, 1.0, 1.0)
    """
    canonical = canonical_backbone_name(name)
    if canonical == "googlenet":
        variant = kwargs.get("variant", "bn")
        check_choice("variant", variant, tuple(GOOGLENET_NORMALIZATIONS))
        return GOOGLENET_NORMALIZATIONS[variant]
    if canonical == "small_cnn":
        return SMALL_CNN_NORMALIZATION
    return _application_normalization(canonical)


@functools.cache
def _application_normalization(canonical):
    return _probe_preprocess_input(_application_modules()[canonical].preprocess_input)


def _probe_preprocess_input(function):
    """Read the affine map and channel order of a ``keras.applications`` ``preprocess_input``."""
    import keras

    def run(x):
        return np.asarray(keras.ops.convert_to_numpy(function(x.copy())), dtype="float64").reshape(3)

    zero = np.zeros((1, 1, 1, 3), dtype="float32")
    offset = run(zero)
    slope = np.zeros(3)
    source = [None, None, None]  # source[c]: input channel feeding output channel c
    for k in range(3):
        probe = zero.copy()
        probe[..., k] = 255.0
        delta = (run(probe) - offset) / 255.0
        (changed,) = np.nonzero(np.abs(delta) > 1e-9)
        if len(changed) != 1:
            raise ValueError(f"{function} is not a per-channel affine preprocessing.")
        source[changed[0]] = k
        slope[changed[0]] = delta[changed[0]]
    if source == [0, 1, 2]:
        channel_order = "RGB"
    elif source == [2, 1, 0]:
        channel_order = "BGR"
    else:
        raise ValueError(f"{function} permutes channels as {source}, neither RGB nor BGR.")
    if np.allclose(slope, slope[0], rtol=1e-5):
        # Same factor for every channel ("caffe", "tf", pass-through): no std.
        scale = 1.0 / round(1.0 / slope[0], 3)
        std = np.ones(3)
    else:
        # Per-channel factors ("torch"): [0, 1] scale, std = scale / slope.
        scale = 1.0 / 255.0
        std = scale / slope
    mean = -offset * std
    # preprocess_input computes in float32: round off its noise (4 decimals keep 103.939, 0.485...).
    return Normalization(
        mean=tuple(round(float(m), 4) + 0.0 for m in mean),
        std=tuple(round(float(s), 4) + 0.0 for s in std),
        channel_order=channel_order,
        scale=scale,
    )


__all__ = [
    "CHANNEL_ORDERS",
    "GOOGLENET_NORMALIZATIONS",
    "NORMALIZATIONS",
    "Normalization",
    "backbone_names",
    "backbone_normalization",
    "canonical_backbone_name",
    "get_normalization",
    "keras_applications",
]
