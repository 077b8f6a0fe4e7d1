"""Sampler invariants: layouts (checked with kerasml.losses), distinct classes, coverage, determinism."""

import numpy as np
import pytest

from kerasml.data import MPerClassSampler, NPairSampler, TripletSampler, get_sampler
from kerasml.losses import check_npair_batch, check_triplet_batch


def _labels(classes=10, low=2, high=7, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(rng.integers(low, high), 100 + c) for c in range(classes)])
    rng.shuffle(labels)
    return labels


@pytest.mark.parametrize("batch_size", [2, 8, 20])
def test_npair_layout_distinct_classes_and_coverage(batch_size):
    labels = _labels()
    sampler = NPairSampler(labels, batch_size, seed=1)
    assert len(sampler) == int(np.ceil(len(labels) / batch_size))
    n = batch_size // 2
    for epoch in (0, 1):
        plan = sampler.epoch(epoch)
        seen = set()
        for batch in plan:
            check_npair_batch(labels[batch])  # raises on a broken layout
            assert len(set(batch[:n].tolist()) & set(batch[n:].tolist())) == 0  # anchor != positive image
            seen.update(labels[batch].tolist())
        assert seen == set(labels.tolist())  # every class in every epoch


def test_npair_balanced_classes_visit_every_image():
    labels = np.repeat(np.arange(6), 4)
    sampler = NPairSampler(labels, 6, seed=3)
    counts = np.bincount(sampler.epoch(0).reshape(-1), minlength=len(labels))
    assert counts.min() == counts.max() == 1


@pytest.mark.parametrize("batch_size", [3, 12, 30])
def test_triplet_layout_and_anchor_coverage(batch_size):
    labels = _labels()
    sampler = TripletSampler(labels, batch_size, seed=2)
    n = batch_size // 3
    plan = sampler.epoch(0)
    for batch in plan:
        check_triplet_batch(labels[batch])
        assert (batch[:n] != batch[n : 2 * n]).all()  # the positive is another image
    anchors = plan[:, :n].reshape(-1)
    assert set(anchors.tolist()) == set(range(len(labels)))  # every image is an anchor once an epoch
    assert len(anchors) - len(labels) < n


def test_m_per_class_layout_and_coverage():
    labels = _labels(classes=12, low=2, high=9)
    sampler = MPerClassSampler(labels, 16, m=4, seed=0)
    seen = set()
    for batch in sampler.epoch(0):
        groups = labels[batch].reshape(4, 4)
        assert (groups == groups[:, :1]).all()  # grouped by class
        assert len(set(groups[:, 0].tolist())) == 4  # distinct classes
        seen.update(groups[:, 0].tolist())
    assert seen == set(labels.tolist())
    assert sampler.get_config()["m"] == 4


def test_plans_are_deterministic_per_seed_and_epoch():
    labels = _labels()
    for cls, size in ((NPairSampler, 8), (TripletSampler, 9), (MPerClassSampler, 8)):
        a, b, c = cls(labels, size, seed=5), cls(labels, size, seed=5), cls(labels, size, seed=6)
        assert np.array_equal(a.epoch(0), b.epoch(0))
        assert np.array_equal(a.epoch(3), b.epoch(3))
        assert not np.array_equal(a.epoch(0), a.epoch(1))
        assert not np.array_equal(a.epoch(0), c.epoch(0))
        assert np.array_equal(a.batch(2, 1), b.epoch(2)[1])


def test_impossible_requests_fail_at_construction_with_numbers():
    labels = np.repeat(np.arange(5), 3)
    with pytest.raises(ValueError, match=r"N = batch_size / 2 = 12 / 2.*has 5 class.*batch_size <= 10"):
        NPairSampler(labels, 12)
    npair_rule = r"NPairSampler needs batch_size = an even int >= 2.*batch_size=7\. Use 6 or 8"
    with pytest.raises(ValueError, match=npair_rule):
        NPairSampler(labels, 7)
    triplet_rule = r"TripletSampler needs batch_size = a multiple of 3.*batch_size=10\. Use 9 or 12"
    with pytest.raises(ValueError, match=triplet_rule):
        TripletSampler(labels, 10)
    with pytest.raises(ValueError, match=r"multiple of m=4.*batch_size=10"):
        MPerClassSampler(labels, 10, m=4)
    with pytest.raises(ValueError, match=r"batch_size / m = 24 / 4.*has 5 class"):
        MPerClassSampler(labels, 24, m=4)
    single = np.array([0, 0, 1, 2, 2, 3])
    for cls, size in ((NPairSampler, 2), (TripletSampler, 3), (MPerClassSampler, 4)):
        with pytest.raises(ValueError, match=r"2 of 4 classes have 1 image \(class ids 1, 3\)"):
            cls(single, size)
    with pytest.raises(ValueError, match="at least 2 classes"):
        TripletSampler(np.zeros(6, int), 3)
    with pytest.raises(ValueError, match="Expected one of"):
        get_sampler("quadruplet", labels, 4)


def test_drop_singletons():
    labels = np.array([0, 0, 1, 2, 2, 3, 4, 4])
    sampler = NPairSampler(labels, 4, drop_singletons=True)
    assert sampler.classes.tolist() == [0, 2, 4]
    for batch in sampler.epoch(0):
        check_npair_batch(labels[batch])
        assert not {1, 3} & set(labels[batch].tolist())
    triplet = TripletSampler(labels, 3, drop_singletons=True)
    assert not {2, 5} & set(triplet.epoch(0)[:, 0].tolist())  # singletons are never anchors


def test_small_classes_repeat_in_m_per_class():
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    sampler = get_sampler("m_per_class", labels, 8, m=4)
    for batch in sampler.epoch(0):
        groups = labels[batch].reshape(2, 4)
        assert (groups == groups[:, :1]).all()


@pytest.mark.parametrize(
    "module", ["kerasml.data.samplers", "kerasml.data.augment", "kerasml.data.sources", "kerasml.data.ingestion"]
)
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
