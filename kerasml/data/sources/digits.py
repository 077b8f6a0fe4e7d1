"""scikit-learn's bundled 8x8 handwritten digits (1,797 images), offline.

Classes 0-4 train, 5-9 test. Pixels 0-16 are scaled to 0-255 and the images upscaled to
the store size (default 32 px). Tiny and fast, the quickstart dataset; raw pixels already
retrieve well, so it proves the pipeline rather than a method.
"""

import numpy as np

from kerasml.data.sources.base import Catalog, Source, SplitCounts

__all__ = ["DigitsSource"]


class DigitsSource(Source):
    """scikit-learn's ``load_digits()``: 10 classes, 1,797 grey 8x8 images (offline).

    Args:
        path: ignored (the data ships with scikit-learn).
    """

    name = "digits"
    needs_path = False
    default_image_size = 32
    standard_split = "digits 0-4 train, 5-9 test"
    # the images per split of scikit-learn's load_digits (digits 0-4: 901, 5-9: 896)
    _IMAGES = {"train": 901, "test": 896}

    @classmethod
    def split_counts(cls, classes=None):
        """The standard split's counts: 5 classes on each side, 901 train and 896 test images (no file read).

        Args:
            classes: ignored (digits has one split).

        Returns:
            ``{"train": SplitCounts(5, 901, 5), "test": SplitCounts(5, 896, 5)}``.
        """
        del classes
        return {
            split: SplitCounts(classes=5, images=images, classes_with_pairs=5) for split, images in cls._IMAGES.items()
        }

    def _load(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        return images, digits.target.astype(np.int64)

    def _build_catalog(self):
        self._images, target = self._load()
        class_ids = np.arange(10, dtype=np.int64)
        return Catalog(
            class_ids=class_ids,
            class_names=[str(i) for i in range(10)],
            train_class_ids=class_ids[:5],
            image_keys=list(range(len(target))),
            image_class_ids=target,
            image_paths=[f"digits/{i:04d}" for i in range(len(target))],
        )

    def iter_images(self, keys):
        """Yield ``(index, uint8 [8, 8] grey image)`` in the requested order."""
        self.catalog()
        for key in keys:
            yield key, self._images[int(key)]
