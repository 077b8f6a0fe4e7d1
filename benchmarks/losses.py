"""Forward + backward cost of kerasml's losses on TensorFlow, PyTorch and JAX.

What is measured
----------------
For every loss and batch size ``B`` (default 128 and 512, embedding width
``D = 128``): the wall time of ONE forward pass of the loss plus the gradient
of the loss with respect to the embeddings, i.e. what a training step spends in
the loss. Nothing else (no model, no optimizer).

- TensorFlow: ``tf.function`` (``jit_compile=False`` by default: the graph
  runtime with Grappler, no XLA; ``--tf-xla`` switches XLA on) around a
  ``tf.GradientTape`` that computes ``loss`` and ``d loss / d embeddings``.
- JAX: ``jax.jit(jax.value_and_grad(f))``, then ``jax.block_until_ready``.
- PyTorch: eager, as users get it: calling the loss class, then
  ``torch.autograd.grad(loss, embeddings)``. In eager mode the labels are
  concrete, so the layout checks of `NPairLoss` / `AngularLoss` / structured
  `TripletLoss` run on every call (a device->host copy of the labels plus a
  few NumPy ops); under ``tf.function`` / ``jax.jit`` the labels are symbolic
  and the check does not run. That difference is part of what is measured.
- pytorch-metric-learning (PML), in the torch worker only and when it is
  importable: the closest PML loss on the SAME tensors (same labels, same
  embeddings), interleaved call by call with the kerasml-torch call so that
  background load hits both alike:

  ============================  ==============================================
  kerasml                       PML
  ============================  ==============================================
  ContrastiveLoss(margin=1)     ContrastiveLoss(pos_margin=0, neg_margin=1,
                                distance=LpDistance(normalize_embeddings=False,
                                p=2), reducer=MeanReducer())
  TripletLoss(mining="all")     TripletMarginLoss(margin=1.0, distance=
                                LpDistance(normalize_embeddings=False, p=2,
                                power=2), reducer=MeanReducer(),
                                triplets_per_anchor="all")
  LiftedStructureLoss(1.0)      LiftedStructureLoss(neg_margin=1, pos_margin=0,
                                LpDistance(normalize_embeddings=False, p=2),
                                MeanReducer()) -- "exact" row; and
                                GeneralizedLiftedStructureLoss(same args) --
                                "generalized" row
  NPairLoss(l2_reg=0.002)       NPairsLoss(distance=DotProductSimilarity())
  AngularLoss(alpha_degrees=40) AngularLoss(alpha=40)
  ============================  ==============================================

  Semantic differences (the comparison is about cost on equal inputs, not
  about equal values):

  * contrastive: kerasml uses ``1/2 d^2`` and ``1/2 max(m - d, 0)^2`` averaged
    over positive and negative pairs separately; PML uses ``d`` and
    ``max(m - d, 0)`` (not squared, no 1/2), each sub-loss averaged by its own
    MeanReducer then summed. Values differ.
  * triplet(all): same triplets, same squared distances, same mean over all
    valid triplets (zeros included) -> identical values. The cost structure
    differs: kerasml builds a dense ``[B, B, B]`` hinge tensor (static shapes,
    traceable under jit); PML gathers the list of valid triplets.
  * lifted: PML's ``LiftedStructureLoss`` is the same eq. (4) of Song et al.
    (same values), but it builds a ``[#positive pairs, #negative pairs]``
    matrix: ~1.6 GB forward and ~30 s per call at B = 512 with 4 samples per
    class, so it is timed only for ``B <= --pml-lifted-exact-max`` (default
    256). ``GeneralizedLiftedStructureLoss`` (Hermans et al.'s generalised
    form: log-sum-exp over positives plus log-sum-exp over negatives per
    anchor) is a different, cheaper loss with dense ``[B, B]`` cost like
    kerasml's; it is shown on its own row for every B.
  * N-pair: same cross-entropy (PML picks one positive pair per class, which on
    an N-pair batch is exactly the ``[a; p]`` split); kerasml adds
    ``l2_reg * mean ||x||^2`` (default 0.002), PML has no penalty.
  * angular: same ``f_in`` on normalised embeddings; kerasml uses the N anchors
    ``a_i`` of the N-pair layout, PML every ordered positive pair (2N anchors)
    -- comparable cost, slightly different values.
  * triplet(hard/semihard/structured) and divergence: no PML column.

  Issue 12's losses (rows multi_similarity ... xbm) each have a PML twin on
  the same tensors; ``PML_MAPPING`` states the conventions, and the table's
  "value rel. diff" column ``|kerasml - PML| / |PML|`` (target <= 1e-5 where
  the conventions match; "(conv.)" where they differ by construction):

  * same values: multi_similarity (kerasml's default MS miner vs PML's loss on
    ``MultiSimilarityMiner(0.1)`` pairs), circle (m=0.4, gamma=80), supcon,
    ntxent, tuplet_margin, fast_ap, and the proxy / classifier losses
    (proxy_anchor, proxy_nca, normalized_softmax, soft_triple with ``tau=0``,
    arcface, sub_center_arcface, cosface) built with ``num_classes = B / 4``
    and PML's parameters set to kerasml's: ``proxies`` as is for ProxyAnchor /
    ProxyNCA, transposed ``[D, C]`` (``[D, C*K]``, class-major) for PML's ``W``
    / ``fc``;
  * margin: kerasml's pair form (``learn_beta=False``) vs PML's triplet form;
  * xbm: ``CrossBatchMemory(MultiSimilarityLoss(miner=None), 2048)`` vs PML's
    ``CrossBatchMemory(MultiSimilarityLoss(), D, 2048)``, both memories filled
    with the batch before timing; kerasml compares the batch with itself plus
    the earlier memory, PML enqueues first and compares with the memory. Every
    timed call enqueues (torch, TensorFlow); on JAX the call runs in a
    ``keras.StatelessScope`` over the memory (a bare ``jax.jit`` cannot assign
    a variable), so the memory stays as filled.

Inputs (fixed seed, identical in every worker): embeddings are
``N(0, 1) / sqrt(D)`` float32 (norms near 1). Label layouts: "P x K" batches
(``B / 4`` classes, 4 samples each, shuffled) for contrastive, triplet
all/hard/semihard and lifted; the N-pair layout ``[c_1..c_N, c_1..c_N]`` with
``N = B / 2`` distinct classes for N-pair and angular; ``[anchors; positives;
negatives]`` with ``n = B // 3`` for structured triplet (so B = 126 / 510 are
used, shown in the B column); ``[B, M=4, D/4]`` for divergence.

How it is timed
---------------
The Keras backend is fixed per process, so the parent spawns one subprocess per
backend (``sys.executable benchmarks/losses.py --worker BACKEND`` with
``KERAS_BACKEND=BACKEND``), one after the other (never concurrently), and
collects the JSON each prints. Per (loss, B) each function is called once
(trace/compile; reported as ``first_ms`` in the JSON), once more to warm up, then
repeated until it has at least ``--repeats`` runs (default 5) AND at least
``--min-time`` seconds (default 1.0) of measured time. Table cells are
``median (p25-p75)`` in milliseconds; min/max/mean and all raw times are in the
``--json`` output. A full default run takes ~2.5 min on a lightly loaded 2-core
machine (load ~2.5) and ~5 min when it is shared with a heavy test run (load
~7); the triplet(all)/(semihard) rows at B = 512 take most of it.

Noise
-----
Wall-clock timings on a small shared machine are noisy. In particular, with the
library default of one thread per core, a PyTorch op that runs in parallel
waits for all its OpenMP threads; when another process holds a core, every
such op can stall for a scheduler slice. On a 2-core machine shared with a test
run this made kerasml-torch AND PML calls 5-50x slower and erratic, with
kerasml (more, smaller ops) hit harder. ``--threads 1`` caps every backend at
one thread (torch.set_num_threads, TF intra/inter-op threads, OMP_NUM_THREADS,
XLA ``--xla_cpu_multi_thread_eigen=false``) and gives much steadier numbers;
the header prints the thread settings and the load average before/after each
worker so the reader can judge.

How to read the ratios
----------------------
``torch/PML`` = median kerasml-torch time / median PML time on the same
inputs; < 1 means kerasml is cheaper. The number in brackets is the ratio of
the fastest runs (min / min), which is less sensitive to background load: when
the two disagree a lot, the machine was noisy. The project's target is a ratio
<= 1.0 for N-pair, triplet(all), contrastive and lifted (coloured green/red).
Columns of different backends are NOT interleaved (they run in different
processes at different times), so compare them with the machine facts and the
load averages printed alongside in mind.

Usage::

    python benchmarks/losses.py [--backends tensorflow,torch,jax] [--sizes 128,512]
        [--dim 128] [--repeats N] [--min-time S] [--losses contrastive,npair,...]
        [--json out.json] [--threads N] [--tf-xla] [--no-pml]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import _harness as harness
from _harness import BACKEND_SHORT, BACKENDS

HEADS = 4  # heads of the divergence loss input [B, HEADS, D / HEADS]
PER_CLASS = 4  # samples per class of the "P x K" layout
TARGET_LOSSES = {"contrastive", "triplet_all", "lifted", "npair"}

# key -> (table label, batch layout, kerasml class name, kwargs, PML variants)
CASES = {
    "contrastive": ("contrastive", "pk", "ContrastiveLoss", {"margin": 1.0}, ("contrastive",)),
    "triplet_all": ("triplet(all)", "pk", "TripletLoss", {"margin": 1.0, "mining": "all"}, ("triplet_all",)),
    "triplet_hard": ("triplet(hard)", "pk", "TripletLoss", {"margin": 1.0, "mining": "hard"}, ()),
    "triplet_semihard": ("triplet(semihard)", "pk", "TripletLoss", {"margin": 1.0, "mining": "semihard"}, ()),
    "triplet_structured": (
        "triplet(structured)",
        "apn",
        "TripletLoss",
        {"margin": 1.0, "mining": "structured"},
        (),
    ),
    "lifted": ("lifted", "pk", "LiftedStructureLoss", {"margin": 1.0}, ("lifted_exact", "lifted_generalized")),
    "npair": ("npair", "npair", "NPairLoss", {"l2_reg": 0.002}, ("npair",)),
    "angular": ("angular", "npair", "AngularLoss", {"alpha_degrees": 40.0}, ("angular",)),
    "divergence": ("divergence", "heads", "DivergenceLoss", {"margin": 1.0}, ()),
    # Issue 12's losses ("pk" batches; the parametric ones get C = B / 4 classes, their PML twin the same
    # proxies / weights; see PML_MAPPING for the conventions).
    "multi_similarity": ("multi_similarity", "pk", "MultiSimilarityLoss", {}, ("multi_similarity",)),
    "circle": ("circle", "pk", "CircleLoss", {"m": 0.4, "gamma": 80.0}, ("circle",)),
    "supcon": ("supcon", "pk", "SupConLoss", {"temperature": 0.1}, ("supcon",)),
    "ntxent": ("ntxent", "pk", "NTXentLoss", {"temperature": 0.07}, ("ntxent",)),
    "tuplet_margin": ("tuplet_margin", "pk", "TupletMarginLoss", {}, ("tuplet_margin",)),
    "fast_ap": ("fast_ap", "pk", "FastAPLoss", {"bins": 10}, ("fast_ap",)),
    "margin": ("margin", "pk", "MarginLoss", {"learn_beta": False}, ("margin",)),
    "proxy_anchor": ("proxy_anchor", "pk", "ProxyAnchorLoss", {}, ("proxy_anchor",)),
    "proxy_nca": ("proxy_nca", "pk", "ProxyNCALoss", {}, ("proxy_nca",)),
    "normalized_softmax": ("normalized_softmax", "pk", "NormalizedSoftmaxLoss", {}, ("normalized_softmax",)),
    "soft_triple": ("soft_triple", "pk", "SoftTripleLoss", {"tau": 0.0}, ("soft_triple",)),
    "arcface": ("arcface", "pk", "ArcFaceLoss", {}, ("arcface",)),
    "sub_center_arcface": ("sub_center_arcface", "pk", "SubCenterArcFaceLoss", {}, ("sub_center_arcface",)),
    "cosface": ("cosface", "pk", "CosFaceLoss", {}, ("cosface",)),
    "xbm": ("xbm(ms, M=2048)", "pk", "CrossBatchMemory", {"memory_size": 2048}, ("xbm",)),
}
#: Losses with trainable parameters: built with ``num_classes = B / PER_CLASS`` and ``embedding_dim = D``.
PARAMETRIC = {
    "margin",
    "proxy_anchor",
    "proxy_nca",
    "normalized_softmax",
    "soft_triple",
    "arcface",
    "sub_center_arcface",
    "cosface",
}
XBM_ROWS = 2048  # the memory of the xbm row, filled before timing
PML_LABELS = {
    "contrastive": "ContrastiveLoss",
    "triplet_all": "TripletMarginLoss(all)",
    "lifted_exact": "LiftedStructureLoss",
    "lifted_generalized": "GeneralizedLiftedStructureLoss",
    "npair": "NPairsLoss",
    "angular": "AngularLoss",
    "multi_similarity": "MultiSimilarityLoss+MultiSimilarityMiner",
    "circle": "CircleLoss",
    "supcon": "SupConLoss",
    "ntxent": "NTXentLoss",
    "tuplet_margin": "TupletMarginLoss",
    "fast_ap": "FastAPLoss",
    "margin": "MarginLoss",
    "proxy_anchor": "ProxyAnchorLoss",
    "proxy_nca": "ProxyNCALoss",
    "normalized_softmax": "NormalizedSoftmaxLoss",
    "soft_triple": "SoftTripleLoss",
    "arcface": "ArcFaceLoss",
    "sub_center_arcface": "SubCenterArcFaceLoss",
    "cosface": "CosFaceLoss",
    "xbm": "CrossBatchMemory(MultiSimilarityLoss)",
}
#: How each of issue 12's kerasml losses maps to its PML twin, and whether the values must agree.
PML_MAPPING = {
    "multi_similarity": "MultiSimilarityLoss() [its MS miner, eps 0.1] = PML MultiSimilarityLoss(2, 50, 0.5) "
    "on the pairs of MultiSimilarityMiner(0.1): same values",
    "circle": "CircleLoss(m=0.4, gamma=80) = PML CircleLoss(m=0.4, gamma=80): same values (PML averages over "
    "anchors with a non-zero loss, kerasml over anchors with a positive and a negative: equal unless one underflows)",
    "supcon": "SupConLoss(0.1) = PML SupConLoss(0.1): same values",
    "ntxent": "NTXentLoss(0.07) = PML NTXentLoss(0.07): same values (PML builds [#positive pairs, #negative "
    "pairs]: timed only for B <= --pml-lifted-exact-max)",
    "tuplet_margin": "TupletMarginLoss(5.73 deg, 64) = PML TupletMarginLoss(5.73, 64): same values (PML builds "
    "[#positive pairs, #negative pairs]: timed only for B <= --pml-lifted-exact-max)",
    "fast_ap": "FastAPLoss(10) = PML FastAPLoss(num_bins=10): same values",
    "margin": "MarginLoss(0.2, beta=1.2, learn_beta=False) vs PML MarginLoss(0.2, nu=0, beta=1.2): kerasml sums "
    "every pair's hinge over the non-zero ones, PML averages positive and negative terms over triplets: "
    "values differ",
    "proxy_anchor": "ProxyAnchorLoss(C, D, 0.1, 32) = PML ProxyAnchorLoss(C, D, 0.1, 32), same proxies: same values",
    "proxy_nca": "ProxyNCALoss(C, D, softmax_scale=1) = PML ProxyNCALoss(C, D, softmax_scale=1), same proxies",
    "normalized_softmax": "NormalizedSoftmaxLoss(C, D, 0.05) = PML NormalizedSoftmaxLoss(C, D, 0.05), W = proxies^T",
    "soft_triple": "SoftTripleLoss(C, D, K=10, la=20, gamma=0.1, margin=0.01, tau=0) = PML SoftTripleLoss(same), "
    "fc = centres [C, K, D] laid out as [D, C*K]: same values (tau = 0: PML has no centre regulariser)",
    "arcface": "ArcFaceLoss(C, D, 28.6, 64) = PML ArcFaceLoss(C, D, 28.6, 64), W = proxies^T",
    "sub_center_arcface": "SubCenterArcFaceLoss(C, D, K=3) = PML SubCenterArcFaceLoss(C, D, sub_centers=3), "
    "W = [C, K, D] laid out as [D, C*K]",
    "cosface": "CosFaceLoss(C, D, 0.35, 64) = PML CosFaceLoss(C, D, 0.35, 64), W = proxies^T",
    "xbm": "CrossBatchMemory(MultiSimilarityLoss(miner=None), 2048) vs PML CrossBatchMemory(MultiSimilarityLoss(), "
    "D, 2048), both memories full of the same batch: kerasml compares the batch with itself and the memory of "
    "earlier batches, PML enqueues first and compares with the memory only (own slot skipped): values differ "
    "by the one extra copy",
}
#: PML losses that build a [#positive pairs, #negative pairs] matrix (1536 x 260096 at B = 512, ~10 s and
#: several GB per call): timed only up to --pml-lifted-exact-max, like PML's LiftedStructureLoss.
PML_PAIR_BY_PAIR = {"ntxent", "tuplet_margin"}
#: Keys whose kerasml and PML values must agree (relative difference shown in the table).
SAME_VALUES = {key for key, text in PML_MAPPING.items() if "values differ" not in text}


# ---------------------------------------------------------------- inputs ---


def make_inputs(layout, batch, dim, seed):
    """Deterministic ``(labels int64 [B'], embeddings float32, B')`` for a layout."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if layout == "pk":
        classes = max(batch // PER_CLASS, 2)
        labels = np.arange(batch) % classes
        rng.shuffle(labels)
    elif layout == "npair":
        n = batch // 2
        anchors = rng.permutation(10 * n)[:n]
        labels = np.concatenate([anchors, anchors])
    elif layout == "apn":
        n = batch // 3
        anchors = rng.permutation(n)
        labels = np.concatenate([anchors, anchors, np.roll(anchors, 1)])
    elif layout == "heads":
        labels = np.zeros(batch)
    else:
        raise ValueError(layout)
    size = labels.shape[0]
    shape = (size, HEADS, dim // HEADS) if layout == "heads" else (size, dim)
    embeddings = rng.standard_normal(shape) / math.sqrt(shape[-1])
    return labels.astype(np.int64), embeddings.astype(np.float32), size


# ---------------------------------------------------------------- timing ---


def bench(fns, min_runs, min_time, max_runs=2000, max_time=60.0):
    """Time several zero-argument callables, interleaved round by round.

    Each is called once (compile / first call, timed separately) and once more
    (warm-up), then repeated until it has ``min_runs`` runs and ``min_time``
    seconds of measured time. ``max_runs`` / ``max_time`` (per function, wall)
    bound a pathological case. Returns ``{name: stats}`` and the outputs of the
    first calls.
    """
    first, outputs = {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        outputs[name] = fn()
        first[name] = (time.perf_counter() - t0) * 1e3
        fn()
    times = {name: [] for name in fns}
    started = time.perf_counter()
    while True:
        needy = [
            name
            for name in fns
            if (len(times[name]) < min_runs or sum(times[name]) < min_time)
            and len(times[name]) < max_runs
            and not (len(times[name]) >= 3 and time.perf_counter() - started > max_time * len(fns))
        ]
        if not needy:
            break
        for name in needy:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    result = {}
    for name in fns:
        result[name] = {**harness.stats_ms([t * 1e3 for t in times[name]]), "first_ms": first[name]}
    return result, outputs


# ---------------------------------------------------------------- worker ---


def _step_tensorflow(loss, labels, embeddings, xla):
    import tensorflow as tf

    y = tf.constant(labels.astype("int32"))
    x = tf.constant(embeddings)

    @tf.function(jit_compile=xla)
    def step(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y, x)
        return value, tape.gradient(value, x)

    def run():
        value, grad = step(y, x)
        return value, grad

    return run, lambda out: float(out[0].numpy())


def _step_jax(loss, labels, embeddings):
    import jax
    import jax.numpy as jnp

    y = jnp.asarray(labels.astype("int32"))
    x = jnp.asarray(embeddings)
    step = jax.jit(jax.value_and_grad(lambda x, y: loss(y, x)))

    def run():
        return jax.block_until_ready(step(x, y))

    return run, lambda out: float(out[0])


def _step_torch(loss, labels, embeddings, pml=False):
    import torch

    y = torch.from_numpy(labels)  # int64, as a torch DataLoader gives
    x = torch.from_numpy(embeddings).requires_grad_(True)

    def run():
        value = loss(x, y) if pml else loss(y, x)
        (grad,) = torch.autograd.grad(value, x)
        return value, grad

    return run, lambda out: float(out[0].detach())


def _pml_losses():
    """PML equivalents, or ``{}`` when pytorch_metric_learning is missing."""
    try:
        from pytorch_metric_learning import distances, losses, reducers
    except ImportError:
        return {}

    def euclidean():
        return distances.LpDistance(normalize_embeddings=False, p=2)

    return {
        "contrastive": lambda: losses.ContrastiveLoss(
            pos_margin=0, neg_margin=1, distance=euclidean(), reducer=reducers.MeanReducer()
        ),
        "triplet_all": lambda: losses.TripletMarginLoss(
            margin=1.0,
            distance=distances.LpDistance(normalize_embeddings=False, p=2, power=2),
            reducer=reducers.MeanReducer(),
            triplets_per_anchor="all",
        ),
        # Closest in meaning: PML's LiftedStructureLoss is the same eq. (4) of
        # Song et al. (same values on the same inputs) but costs
        # O(#pos pairs x #neg pairs) memory; the generalised one is a different
        # loss with kerasml's dense [B, B] cost. Both are shown.
        "lifted_exact": lambda: losses.LiftedStructureLoss(
            neg_margin=1, pos_margin=0, distance=euclidean(), reducer=reducers.MeanReducer()
        ),
        "lifted_generalized": lambda: losses.GeneralizedLiftedStructureLoss(
            neg_margin=1, pos_margin=0, distance=euclidean(), reducer=reducers.MeanReducer()
        ),
        "npair": lambda: losses.NPairsLoss(distance=distances.DotProductSimilarity()),
        "angular": lambda: losses.AngularLoss(alpha=40),
    }


def _pml_twin(variant, kloss, classes, dim):
    """PML's twin of one of issue 12's kerasml losses (``kloss``), with the same proxies / weights.

    Returns a callable ``(embeddings, labels) -> loss``, or ``None`` when PML is missing.
    """
    try:
        import numpy as np
        import torch
        from pytorch_metric_learning import losses, miners
    except ImportError:
        return None

    def copied(values):
        return torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))

    proxies = np.asarray(kloss.proxies.numpy()) if hasattr(kloss, "proxies") else None
    flat = None if proxies is None else proxies.reshape(-1, dim)  # [C, D] or [C·K, D], class-major
    if variant == "multi_similarity":
        loss, miner = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), miners.MultiSimilarityMiner(0.1)
        return lambda x, y: loss(x, y, miner(x, y))
    simple = {
        "circle": lambda: losses.CircleLoss(m=0.4, gamma=80),
        "supcon": lambda: losses.SupConLoss(temperature=0.1),
        "ntxent": lambda: losses.NTXentLoss(temperature=0.07),
        "tuplet_margin": lambda: losses.TupletMarginLoss(margin=5.73, scale=64),
        "fast_ap": lambda: losses.FastAPLoss(num_bins=10),
        "margin": lambda: losses.MarginLoss(margin=0.2, nu=0, beta=1.2),
    }
    if variant in simple:
        return simple[variant]()
    if variant == "xbm":
        loss = losses.CrossBatchMemory(losses.MultiSimilarityLoss(2, 50, 0.5), embedding_size=dim, memory_size=XBM_ROWS)
        return loss
    if variant in ("proxy_anchor", "proxy_nca"):
        cls = losses.ProxyAnchorLoss if variant == "proxy_anchor" else losses.ProxyNCALoss
        extra = {"margin": 0.1, "alpha": 32} if variant == "proxy_anchor" else {"softmax_scale": 1}
        loss = cls(num_classes=classes, embedding_size=dim, **extra)
        loss.proxies = copied(flat)
        return loss
    if variant == "soft_triple":
        loss = losses.SoftTripleLoss(
            num_classes=classes, embedding_size=dim, centers_per_class=10, la=20, gamma=0.1, margin=0.01
        )
        loss.fc = copied(flat.T)
        return loss
    weighted = {
        "normalized_softmax": (losses.NormalizedSoftmaxLoss, {"temperature": 0.05}),
        "arcface": (losses.ArcFaceLoss, {"margin": 28.6, "scale": 64}),
        "sub_center_arcface": (losses.SubCenterArcFaceLoss, {"margin": 28.6, "scale": 64, "sub_centers": 3}),
        "cosface": (losses.CosFaceLoss, {"margin": 0.35, "scale": 64}),
    }
    cls, extra = weighted[variant]
    loss = cls(num_classes=classes, embedding_size=dim, **extra)
    loss.W = copied(flat.T)
    return loss


def _kerasml_loss(kerasml, key, class_name, kwargs, labels, dim):
    """The kerasml loss of a case: parametric ones sized to the batch's classes, xbm's memory filled."""
    cls = getattr(kerasml.losses, class_name)
    if key == "xbm":
        return cls(kerasml.losses.MultiSimilarityLoss(miner=None), embedding_dim=dim, **kwargs)
    if key in PARAMETRIC and key != "margin":
        return cls(num_classes=int(labels.max()) + 1, embedding_dim=dim, **kwargs)
    return cls(**kwargs)


def _fill(loss, labels, embeddings, pml=False):
    """Fill a cross-batch memory with copies of the batch (PML: by calling it), so every timed call sees it full."""
    for _ in range(-(-XBM_ROWS // len(labels))):
        if pml:
            import torch

            with torch.no_grad():
                loss(torch.from_numpy(embeddings), torch.from_numpy(labels))
        else:
            loss.memory.enqueue(embeddings, labels)


def _held_memory(loss):
    """JAX: run the xbm loss in a stateless scope over its memory (a bare jit cannot assign variables)."""
    import keras

    def call(y, x):
        with keras.StatelessScope(state_mapping=[(v, v.value) for v in loss.memory.variables]):
            return loss(y, x)

    return call


def _backend_facts(backend):
    facts = {"backend": backend, **harness.backend_facts(backend)}
    if backend == "torch":
        import torch

        facts["torch_parallel_info"] = torch.__config__.parallel_info().splitlines()[:4]
    return facts


def worker(backend, args):
    """Run every case on one backend and print the JSON results on stdout."""
    harness.start_worker(backend, args.threads)
    import kerasml

    pml = _pml_losses() if backend == "torch" and not args.no_pml else {}
    facts = _backend_facts(backend)
    facts["pml"] = bool(pml)
    facts["loadavg_start"] = harness.loadavg()
    rows = []
    for key in args.losses:
        label, layout, class_name, kwargs, pml_variants = CASES[key]
        for batch in args.sizes:
            seed = 1000 * list(CASES).index(key) + batch
            labels, embeddings, size = make_inputs(layout, batch, args.dim, seed)
            row = {"loss": key, "label": label, "B": size, "B_requested": batch, "dim": args.dim}
            fns, readers = {}, {}
            try:
                loss = _kerasml_loss(kerasml, key, class_name, kwargs, labels, args.dim)
                if key == "xbm":
                    _fill(loss, labels, embeddings)
                if backend == "tensorflow":
                    fns["kerasml"], readers["kerasml"] = _step_tensorflow(loss, labels, embeddings, args.tf_xla)
                elif backend == "jax":
                    held = _held_memory(loss) if key == "xbm" else loss
                    fns["kerasml"], readers["kerasml"] = _step_jax(held, labels, embeddings)
                else:
                    fns["kerasml"], readers["kerasml"] = _step_torch(loss, labels, embeddings)
                for variant in pml_variants:
                    if variant in PML_PAIR_BY_PAIR and pml and size > args.pml_lifted_exact_max:
                        row[f"pml:{variant}"] = {
                            "skipped": f"B > --pml-lifted-exact-max={args.pml_lifted_exact_max} (a [#positive "
                            "pairs, #negative pairs] matrix: 1536 x 260096 floats per tensor at B=512)"
                        }
                        continue
                    if variant in PML_MAPPING and pml:
                        twin = _pml_twin(variant, loss, int(labels.max()) + 1, args.dim)
                        if variant == "xbm":
                            _fill(twin, labels, embeddings, pml=True)
                        fns[f"pml:{variant}"], readers[f"pml:{variant}"] = _step_torch(
                            twin, labels, embeddings, pml=True
                        )
                        continue
                    if variant not in pml:
                        continue
                    if variant == "lifted_exact" and size > args.pml_lifted_exact_max:
                        row[f"pml:{variant}"] = {
                            "skipped": f"B > --pml-lifted-exact-max={args.pml_lifted_exact_max} "
                            "(O(#pos x #neg pairs) memory: ~9 GB RSS, ~30 s/call at B=512)"
                        }
                        continue
                    fns[f"pml:{variant}"], readers[f"pml:{variant}"] = _step_torch(
                        pml[variant](), labels, embeddings, pml=True
                    )
                timings, outputs = bench(fns, args.repeats, args.min_time)
                for name, stats in timings.items():
                    row[name] = {**stats, "value": readers[name](outputs[name])}
            except Exception as error:  # a benchmark reports the failure and goes on
                row["error"] = f"{type(error).__name__}: {error}"
            rows.append(row)
            summary = ", ".join(
                f"{name} {stats['median_ms']:.2f} ms"
                for name, stats in row.items()
                if isinstance(stats, dict) and "median_ms" in stats
            )
            harness.progress(BACKEND_SHORT[backend], f"{label:<20} B={size:<4} {summary or row.get('error', '')}")
    facts["loadavg_end"] = harness.loadavg()
    harness.emit({"backend": backend, "facts": facts, "rows": rows})


# ---------------------------------------------------------------- parent ---


def run_backend(backend, args):
    """Run one worker subprocess; returns its parsed JSON or an error dict."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        backend,
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--dim",
        str(args.dim),
        "--repeats",
        str(args.repeats),
        "--min-time",
        str(args.min_time),
        "--losses",
        ",".join(args.losses),
        "--pml-lifted-exact-max",
        str(args.pml_lifted_exact_max),
    ]
    if args.tf_xla:
        command.append("--tf-xla")
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.no_pml:
        command.append("--no-pml")
    result = harness.run_worker(command, harness.worker_env(backend), timeout=args.timeout)
    return {"backend": backend, **result} if "error" in result else result


def _cell(stats):
    if stats is None:
        return "-"
    if "skipped" in stats:
        return "skipped"
    digits = 2 if stats["median_ms"] < 100 else 0
    return f"{stats['median_ms']:.{digits}f} ({stats['p25_ms']:.{digits}f}-{stats['p75_ms']:.{digits}f})"


def build_rows(results, args):
    """Table rows: (label, B, {backend: stats}, pml variant, pml stats, ratios)."""
    by_key = {}
    for backend, result in results.items():
        for row in result.get("rows", []):
            by_key.setdefault((row["loss"], row["B_requested"]), {})[backend] = row
    table = []
    for key in args.losses:
        label, _, _, _, variants = CASES[key]
        for batch in args.sizes:
            rows = by_key.get((key, batch), {})
            size = next((r["B"] for r in rows.values()), batch)
            cells = {}
            for backend in BACKENDS:
                row = rows.get(backend)
                if row is None:
                    cells[backend] = None
                elif "error" in row:
                    cells[backend] = {"error": row["error"]}
                else:
                    cells[backend] = row.get("kerasml")
            torch_row = rows.get("torch", {})
            for index, variant in enumerate(variants or (None,)):
                pml_stats = torch_row.get(f"pml:{variant}") if variant else None
                ratio = ratio_min = rel_diff = None
                ours_value = (torch_row.get("kerasml") or {}).get("value")
                if pml_stats and "value" in pml_stats and ours_value is not None:
                    rel_diff = abs(ours_value - pml_stats["value"]) / max(abs(pml_stats["value"]), 1e-12)
                ours = cells.get("torch")
                if pml_stats and "median_ms" in pml_stats and ours and "median_ms" in ours:
                    ratio = ours["median_ms"] / pml_stats["median_ms"]
                    ratio_min = ours["min_ms"] / pml_stats["min_ms"]
                name = label
                if key == "lifted" and variant:
                    name = f"{label} (PML {variant.split('_')[1]})"
                table.append(
                    {
                        "loss": key,
                        "label": name,
                        "B": size,
                        "cells": cells,
                        "repeat": index > 0,
                        "pml_variant": variant,
                        "pml": pml_stats,
                        "ratio": ratio,
                        "ratio_min": ratio_min,
                        "rel_diff": rel_diff,
                    }
                )
    return table


def _value_checks(results):
    """Cross-backend agreement of the loss values (a sanity check of the inputs)."""
    problems = []
    by_key = {}
    for backend, result in results.items():
        for row in result.get("rows", []):
            if "kerasml" in row:
                by_key.setdefault((row["label"], row["B"]), {})[backend] = row["kerasml"]["value"]
    for (label, size), values in by_key.items():
        if len(values) > 1:
            low, high = min(values.values()), max(values.values())
            if abs(high - low) > 1e-3 * max(1.0, abs(high)):
                problems.append(f"{label} B={size}: backends disagree {values}")
    return problems


def report(machine, results, args):
    table_rows = build_rows(results, args)
    escape = harness.escape
    lines_facts = harness.machine_lines(machine)
    for backend, result in results.items():
        facts = result.get("facts", {})
        extra = {
            k: v
            for k, v in facts.items()
            if k not in ("backend", "loadavg_start", "loadavg_end", "torch_parallel_info") and v is not None
        }
        lines_facts.append(
            f"{BACKEND_SHORT[backend]} worker ({result.get('wall_s', 0):.0f} s): "
            + ", ".join(f"{k}={v}" for k, v in extra.items())
            + harness.load_change(facts)
        )
    mode = "tf.function(jit_compile=True) [XLA]" if args.tf_xla else "tf.function(jit_compile=False)"
    title = (
        f"kerasml losses, forward + d/d(embeddings), D={args.dim}, ms: median (p25-p75); "
        f"tf={mode}, torch=eager loss class, jax=jit(value_and_grad)"
    )
    console = harness.console(170)
    harness.print_lines(console, ["[bold]Machine[/bold]"], indent="")
    harness.print_lines(console, [escape(line) for line in lines_facts])
    columns = [("loss", "left"), ("B", "right")]
    columns += [(f"{BACKEND_SHORT[backend]} ms", "right") for backend in BACKENDS]
    columns += [("PML ms", "right"), ("torch/PML (min/min)", "right"), ("value rel. diff", "right")]
    cells_rows, sections = [], []
    for index, row in enumerate(table_rows):
        if index and table_rows[index - 1]["loss"] != row["loss"]:
            sections.append(index)
        cells = []
        for backend in BACKENDS:
            stats = row["cells"][backend]
            if row["repeat"]:
                cells.append('[dim]"[/dim]')
            elif stats and "error" in stats:
                cells.append("[red]error[/red]")
            else:
                cells.append(_cell(stats))
        if row["ratio"] is None:
            ratio = "-"
        else:
            colour = ("green" if row["ratio"] <= 1.0 else "red") if row["loss"] in TARGET_LOSSES else "yellow"
            if row["pml_variant"] == "lifted_generalized":
                colour = "yellow"  # a different loss, information only
            ratio = f"[{colour}]{row['ratio']:.2f}[/{colour}] ({row['ratio_min']:.2f})"
        if row["rel_diff"] is None:
            diff = "-"
        elif row["loss"] in SAME_VALUES:
            colour = "green" if row["rel_diff"] <= 1e-5 else "red"
            diff = f"[{colour}]{row['rel_diff']:.1e}[/{colour}]"
        else:
            diff = f"[dim]{row['rel_diff']:.1e} (conv.)[/dim]"
        cells_rows.append([row["label"], str(row["B"]), *cells, _cell(row["pml"]), ratio, diff])
    harness.print_table(console, title, columns, cells_rows, sections)
    notes = [
        "PML column: "
        + "; ".join(f"{k} -> {v}" for k, v in PML_LABELS.items())
        + " (same tensors, interleaved with the kerasml-torch calls).",
        "Ratio = median kerasml-torch / median PML; in brackets min / min. Target <= 1.0 for "
        "contrastive, triplet(all), lifted, npair (lifted (PML generalized) is a different loss: information only).",
        "Columns of different backends ran in different processes at different times: compare them with "
        "the load averages above in mind.",
        "Value rel. diff = |kerasml-torch - PML| / |PML| on the same inputs; target <= 1e-5 where the conventions "
        "match, '(conv.)' where they differ by construction (see below).",
    ]
    shown = {row["loss"] for row in table_rows if row["pml"]}
    notes += [escape(f"{key}: {text}") for key, text in PML_MAPPING.items() if key in shown]
    for row in table_rows:
        if row["pml"] and "skipped" in row["pml"]:
            notes.append(escape(f"{row['label']} B={row['B']}: PML {row['pml']['skipped']}."))
    for result in results.values():
        if "error" in result:
            tail = result.get("stderr_tail", "")
            notes.append(f"[red]{result['backend']} worker failed: {escape(result['error'])}[/red]\n{escape(tail)}")
        for row in result.get("rows", []):
            if "error" in row:
                notes.append(f"[red]{result['backend']} {row['label']} B={row['B']}: {escape(row['error'])}[/red]")
    problems = _value_checks(results)
    for problem in problems:
        notes.append(f"[red]value check: {escape(problem)}[/red]")
    if len(results) > 1 and not problems:
        notes.append("Value check: the kerasml loss values agree across backends (to 1e-3 relative).")
    values = []
    for row in results.get("torch", {}).get("rows", []):
        pml_values = {k[4:]: v["value"] for k, v in row.items() if k.startswith("pml:") and "value" in v}
        if pml_values and "kerasml" in row:
            values.append(
                f"{row['label']} B={row['B']}: kerasml {row['kerasml']['value']:.5g}, "
                + ", ".join(f"PML {PML_LABELS[k]} {v:.5g}" for k, v in pml_values.items())
            )
    if values:
        notes.append(
            escape("Loss values on the shared inputs (semantics differ, see the docstring): " + "; ".join(values))
        )
    harness.print_lines(console, notes)
    return table_rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=harness.csv_list(), default=list(BACKENDS), help="comma list of backends")
    parser.add_argument("--sizes", type=harness.csv_list(int), default=[128, 512], help="comma list of batch sizes")
    parser.add_argument("--dim", type=int, default=128, help="embedding width D")
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed runs per function (default 5)")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="minimum measured seconds per function (default 1.0)"
    )
    parser.add_argument("--losses", type=harness.csv_list(), default=list(CASES), help=f"subset of {','.join(CASES)}")
    parser.add_argument("--json", help="write all results (raw times included) to this file")
    parser.add_argument("--tf-xla", action="store_true", help="tf.function(jit_compile=True) instead of False")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="cap CPU threads of every backend (torch.set_num_threads, TF intra/inter-op, OMP_NUM_THREADS; "
        "for jax only 1 is honoured, via --xla_cpu_multi_thread_eigen=false). Default 0: library defaults",
    )
    parser.add_argument("--no-pml", action="store_true", help="do not time pytorch-metric-learning")
    parser.add_argument(
        "--pml-lifted-exact-max",
        type=int,
        default=256,
        help="largest B at which PML's memory-hungry LiftedStructureLoss, NTXentLoss and TupletMarginLoss are "
        "timed (default 256)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per backend worker")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends if b not in BACKENDS] + [k for k in args.losses if k not in CASES]
    if unknown:
        parser.error(f"unknown backend(s)/loss(es): {unknown}; backends: {BACKENDS}; losses: {list(CASES)}")
    if args.dim % HEADS:
        parser.error(f"--dim must be a multiple of {HEADS} (the divergence loss uses [B, {HEADS}, D/{HEADS}])")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args)
        return 0
    machine = harness.machine_facts(
        ("keras", "tensorflow", "torch", "jax", "jaxlib", "numpy", "pytorch-metric-learning", "rich")
    )
    print(
        f"kerasml loss benchmark: backends={','.join(args.backends)} sizes={args.sizes} D={args.dim} "
        f"repeats>={args.repeats} min-time={args.min_time}s; {machine['cpu_count']} CPUs, "
        f"load {machine['loadavg'][0]:.2f}; torch {machine['versions']['torch']}, "
        f"tf {machine['versions']['tensorflow']}, jax {machine['versions']['jax']}, "
        f"keras {machine['versions']['keras']}, PML {machine['versions']['pytorch-metric-learning']}",
        flush=True,
    )
    started = time.perf_counter()
    results = {}
    for backend in args.backends:
        results[backend] = run_backend(backend, args)
    machine["total_wall_s"] = time.perf_counter() - started
    print(f"total {machine['total_wall_s']:.0f} s", file=sys.stderr)
    table_rows = report(machine, results, args)
    if args.json:
        payload = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "machine": machine}
        payload.update(results=results, table=table_rows)
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    failed = any("error" in result for result in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
