"""A procedural many-class image set rendered with OpenCV (offline, seeded).

Each class is a distinct combination of shape (14), fill pattern (8), body colour (12),
pattern colour (11 others) and layout (single, pair, with a satellite): 44,352 possible
classes, of which ``classes`` are drawn (seeded). Each image renders its class with a random
pose (rotation, position), scale, a random background (gradient), clutter (lines and small
shapes in random colours), brightness/contrast jitter and Gaussian noise, so raw pixels do
not solve retrieval while a CNN can. Image ``i`` of class ``c`` depends only on
``(seed, c, i)``: any subset renders identically in any order.
"""

import math

import numpy as np

from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, SplitCounts

__all__ = ["LAYOUTS", "PALETTE", "PATTERNS", "SHAPES", "ProceduralSource", "render"]

SHAPES = (
    "circle",
    "ellipse",
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "octagon",
    "star4",
    "star5",
    "star6",
    "cross",
    "ring",
    "crescent",
    "arrow",
)
PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checker", "dots", "rings", "halves")
PALETTE = (
    ("red", (220, 40, 40)),
    ("orange", (245, 140, 20)),
    ("yellow", (240, 225, 40)),
    ("lime", (150, 230, 40)),
    ("green", (30, 150, 60)),
    ("teal", (20, 160, 150)),
    ("cyan", (60, 210, 240)),
    ("blue", (40, 70, 220)),
    ("purple", (130, 50, 200)),
    ("magenta", (230, 50, 190)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
)
LAYOUTS = ("single", "pair", "satellite")
_SPACE = (len(SHAPES), len(PATTERNS), len(PALETTE), len(PALETTE) - 1, len(LAYOUTS))
#: the number of distinct classes the generator can draw.
MAX_CLASSES = math.prod(_SPACE)


def _decode(code):
    """Class design ``(shape, pattern, colour, pattern colour, layout)`` of a combination index."""
    digits = []
    for radix in reversed(_SPACE):
        code, digit = divmod(int(code), radix)
        digits.append(digit)
    shape, pattern, colour, other, layout = reversed(digits)
    other = other if other < colour else other + 1  # never the body colour
    return shape, pattern, colour, other, layout


def _outline(shape):
    """Unit-radius polygon(s) of a shape: a list of (points [K, 2], fill value)."""
    t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    name = SHAPES[shape]
    if name == "circle":
        return [(circle, 1.0)]
    if name == "ellipse":
        return [(circle * [1.0, 0.55], 1.0)]
    if name in ("triangle", "square", "pentagon", "hexagon", "octagon"):
        k = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6, "octagon": 8}[name]
        a = np.linspace(0.0, 2.0 * np.pi, k, endpoint=False) - np.pi / 2
        return [(np.stack([np.cos(a), np.sin(a)], axis=1), 1.0)]
    if name.startswith("star"):
        k = int(name[-1])
        a = np.linspace(0.0, 2.0 * np.pi, 2 * k, endpoint=False) - np.pi / 2
        radius = np.where(np.arange(2 * k) % 2 == 0, 1.0, 0.45)
        return [(np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1), 1.0)]
    if name == "cross":
        w = 0.32
        pts = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
        return [(np.array(pts, dtype=float), 1.0)]
    if name == "ring":
        return [(circle, 1.0), (circle * 0.55, 0.0)]
    if name == "crescent":
        return [(circle, 1.0), (circle * 0.85 + [0.45, 0.0], 0.0)]
    # arrow
    pts = [(1.0, 0.0), (0.2, -0.75), (0.2, -0.3), (-1.0, -0.3), (-1.0, 0.3), (0.2, 0.3), (0.2, 0.75)]
    return [(np.array(pts, dtype=float), 1.0)]


def _pattern(index, u, v):
    name = PATTERNS[index]
    if name == "solid":
        return np.zeros(u.shape, dtype=bool)
    if name == "hstripes":
        return np.floor(v * 3.0) % 2 == 0
    if name == "vstripes":
        return np.floor(u * 3.0) % 2 == 0
    if name == "diagonal":
        return np.floor((u + v) * 2.5) % 2 == 0
    if name == "checker":
        return (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0
    if name == "dots":
        return ((u * 2.5) % 1.0 - 0.5) ** 2 + ((v * 2.5) % 1.0 - 0.5) ** 2 < 0.08
    if name == "rings":
        return np.floor(np.sqrt(u * u + v * v) * 4.0) % 2 == 0
    return u > 0  # halves


def _draw_object(image, design, centre, radius, angle, rng):
    import cv2

    size = image.shape[0]
    shape, pattern, colour, other, _ = design
    mask = np.zeros((size, size), dtype=np.uint8)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for points, value in _outline(shape):
        xy = points @ rot.T * radius + centre
        fixed = np.round(xy * 16).astype(np.int32)  # 4 fractional bits (shift=4)
        cv2.fillPoly(mask, [fixed], int(255 * value), lineType=cv2.LINE_AA, shift=4)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / radius
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / radius
    body = np.array(PALETTE[colour][1], np.float32) + rng.normal(0.0, 6.0, 3)
    mark = np.array(PALETTE[other][1], np.float32) + rng.normal(0.0, 6.0, 3)
    texture = np.where(_pattern(pattern, u, v)[..., None], mark, body)
    image[:] = image * (1.0 - alpha) + texture * alpha


def render(design, rng, size):
    """Render one image of a class.

    Args:
        design: ``(shape, pattern, colour, pattern colour, layout)`` indices.
        rng: a NumPy ``Generator`` (the image's randomness).
        size: the square side in pixels.

    Returns:
        ``uint8 [size, size, 3]`` RGB.
    """
    import cv2

    # background: a gradient between two muted colours along a random direction
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    mean = (c0 + c1) / 2
    c0, c1 = mean + (c0 - mean) * 0.5, mean + (c1 - mean) * 0.5
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.clip((xs - 0.5) * math.cos(theta) + (ys - 0.5) * math.sin(theta) + 0.5, 0, 1)[..., None]
    image = (c0 * (1 - ramp) + c1 * ramp).astype(np.float32)
    # clutter: lines and small polygons of random colours
    canvas = np.ascontiguousarray(image.astype(np.uint8))
    thick = max(1, size // 48)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            p, q = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), colour, thick, cv2.LINE_AA)
        else:
            centre, r = rng.uniform(0, size, 2), rng.uniform(0.04, 0.1) * size
            k = int(rng.integers(3, 7))
            a = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = np.stack([centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)], axis=1).astype(np.int32)
            cv2.fillPoly(canvas, [pts], colour, lineType=cv2.LINE_AA)
    image = canvas.astype(np.float32)
    # the class object(s)
    layout = LAYOUTS[design[4]]
    radius = rng.uniform(0.24, 0.36) * size
    centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([math.cos(angle + np.pi / 2), math.sin(angle + np.pi / 2)])
    if layout == "single":
        objects = [(centre, radius)]
    elif layout == "pair":
        objects = [
            (centre - direction * radius * 0.62, radius * 0.58),
            (centre + direction * radius * 0.62, radius * 0.58),
        ]
    else:
        objects = [
            (centre - direction * radius * 0.2, radius * 0.8),
            (centre + direction * radius * 0.95, radius * 0.33),
        ]
    for position, r in objects:
        _draw_object(image, design, position, r, angle, rng)
    # photometric jitter and noise
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    image += rng.normal(0.0, rng.uniform(2.0, 9.0), image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class ProceduralSource(Source):
    """A seeded procedural image set with any number of classes (offline).

    Args:
        path: ignored.
        classes: the number of classes to generate (``--classes`` sets it when given), at most
            `MAX_CLASSES`. Defaults to 100.
        images_per_class: images rendered per class. Defaults to 20.
        seed: draws the class designs and every image. Defaults to 0.
        size: the rendered side in pixels (``kerasml ingest`` renders at ``--image-size``).
            Defaults to 64.
    """

    name = "procedural"
    needs_path = False
    default_image_size = 64
    standard_split = "the first half of the generated classes train, the second half test"
    default_classes = 100
    #: the most classes it can generate (distinct shape/pattern/colour/layout combinations).
    max_classes = MAX_CLASSES
    default_images_per_class = 20

    def __init__(
        self, path=None, *, classes=default_classes, images_per_class=default_images_per_class, seed=0, size=64
    ):
        super().__init__(None)
        if not isinstance(classes, (int, np.integer)) or not 2 <= classes <= MAX_CLASSES:
            raise SourceError(
                f"Invalid value for `classes` of the procedural source: expected 2 to {MAX_CLASSES} (the distinct "
                f"shape/pattern/colour/layout combinations), received {classes!r}."
            )
        if not isinstance(images_per_class, (int, np.integer)) or images_per_class < 1:
            raise SourceError(
                f"Invalid value for `images_per_class`: expected an integer >= 1 (2 or more for positives), "
                f"received {images_per_class!r}."
            )
        self.classes, self.images_per_class, self.seed, self.size = int(classes), int(images_per_class), seed, size

    @classmethod
    def split_counts(cls, classes=None):
        """The counts of ``kerasml.data.ingest("procedural", classes=N)`` (no image is rendered).

        The N generated classes are drawn and split by class, ``ceil(N/2)`` to train and
        ``floor(N/2)`` to test, each with `default_images_per_class` images.

        Args:
            classes: N. Defaults to `default_classes`.

        Returns:
            ``{"train": SplitCounts, "test": SplitCounts}``.

        Example:

        >>> ProceduralSource.split_counts(10)["test"]
        SplitCounts(classes=5, images=100, classes_with_pairs=5)
        """
        classes = cls.default_classes if classes is None else int(classes)
        per_class = cls.default_images_per_class
        pairs = 1 if per_class >= 2 else 0
        halves = {"train": (classes + 1) // 2, "test": classes // 2}
        return {
            split: SplitCounts(classes=n, images=n * per_class, classes_with_pairs=n * pairs)
            for split, n in halves.items()
        }

    def options(self):
        """The generator's settings, recorded in the store."""
        return {"classes": self.classes, "images_per_class": self.images_per_class, "seed": self.seed}

    def prepare(self, image_size):
        """Render at the store's size (called by :func:`kerasml.data.ingest`)."""
        self.size = int(image_size)

    def design(self, class_id):
        """The ``(shape, pattern, colour, pattern colour, layout)`` of a class id."""
        return _decode(self._codes[int(class_id)])

    def _build_catalog(self):
        self._codes = np.random.default_rng([int(self.seed), 7]).permutation(MAX_CLASSES)[: self.classes]
        names = []
        for class_id in range(self.classes):
            shape, pattern, colour, other, layout = self.design(class_id)
            names.append(
                f"{SHAPES[shape]}-{PATTERNS[pattern]}-{PALETTE[colour][0]}-{PALETTE[other][0]}-{LAYOUTS[layout]}"
            )
        class_ids = np.arange(self.classes, dtype=np.int64)
        keys = [(c, i) for c in range(self.classes) for i in range(self.images_per_class)]
        return Catalog(
            class_ids=class_ids,
            class_names=names,
            train_class_ids=class_ids[: self.classes // 2],
            image_keys=keys,
            image_class_ids=np.repeat(class_ids, self.images_per_class),
            image_paths=[f"procedural/{c:05d}/{i:04d}" for c, i in keys],
        )

    def image(self, class_id, index):
        """Render image ``index`` of ``class_id`` (``uint8 [size, size, 3]`` RGB)."""
        self.catalog()
        rng = np.random.default_rng([int(self.seed), int(class_id), int(index)])
        return render(self.design(class_id), rng, self.size)

    def iter_images(self, keys):
        """Yield ``((class_id, index), uint8 image)`` in the requested order."""
        for key in keys:
            yield key, self.image(*key)
