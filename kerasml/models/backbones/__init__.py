"""Backbones: image → pooled feature vector ``y`` of shape ``[B, F]``.

A backbone is a plain `keras.Model` built with the functional API from public
``keras`` layers only (channels-last), so it trains, saves (``.keras``,
``.weights.h5``) and reloads under TensorFlow, PyTorch and JAX.

==================  ========  ==============================================
name                F         notes
==================  ========  ==============================================
``"googlenet"``     1024      Inception-v1 (Szegedy et al. 2015), ~6 M
                              parameters; ``variant="bn"`` (default), the
                              HDML authors' BVLC ``variant="caffe"``, or
                              ``variant="torchvision"``, whose ImageNet
                              weights ``kerasml weights googlenet`` converts
``"small_cnn"``     128       a few conv-BN-ReLU blocks, for tests and CPU
                              quickstarts; works from 8×8 greyscale up
any                 varies    a `keras.applications` model (``"ResNet50"``,
`keras.applications`          ``"mobilenet_v2"``...), ``include_top=False,
name                          pooling="avg"``
==================  ========  ==============================================

Every backbone expects images preprocessed as `preprocessing` describes;
the data pipeline starts from RGB images on the 0–255 scale and applies the
same `kerasml.preprocessing.Normalization` (``Preprocessing`` is its name here).

Modules: `googlenet` (GoogLeNet and its LRN), `torchvision_googlenet` (torchvision's
GoogLeNet and the conversion of its ImageNet weights), `small_cnn`, `weights` (local
weight files and the Caffe loader), `registry` (`get`, names, `preprocessing`).

Example:

>>> from kerasml.models import backbones
>>> model = backbones.get("small_cnn", input_shape=(32, 32, 3), feature_dim=64)
>>> model.output_shape
(None, 64)
>>> backbones.preprocessing("googlenet", variant="caffe").channel_order
'BGR'
"""

from kerasml.models.backbones._common import HostHeNormal
from kerasml.models.backbones.googlenet import GOOGLENET_VARIANTS, LocalResponseNormalization, googlenet
from kerasml.models.backbones.registry import (
    Preprocessing,
    available,
    canonical_name,
    feature_dim,
    get,
    preprocessing,
)
from kerasml.models.backbones.small_cnn import small_cnn
from kerasml.models.backbones.torchvision_googlenet import (
    GOOGLENET_IMAGENET_WEIGHTS,
    TORCHVISION_GOOGLENET_LAST_WORKED,
    TORCHVISION_GOOGLENET_SHA256_PREFIX,
    TORCHVISION_GOOGLENET_URL,
    convert_torchvision_googlenet,
    load_torchvision_weights,
    read_torch_state_dict,
    torchvision_googlenet,
    torchvision_module_names,
)
from kerasml.models.backbones.weights import BVLC_GOOGLENET_URL, load_caffe_weights, missing_weights_hint

__all__ = [
    "BVLC_GOOGLENET_URL",
    "GOOGLENET_IMAGENET_WEIGHTS",
    "GOOGLENET_VARIANTS",
    "TORCHVISION_GOOGLENET_LAST_WORKED",
    "TORCHVISION_GOOGLENET_SHA256_PREFIX",
    "TORCHVISION_GOOGLENET_URL",
    "HostHeNormal",
    "LocalResponseNormalization",
    "Preprocessing",
    "available",
    "canonical_name",
    "convert_torchvision_googlenet",
    "feature_dim",
    "get",
    "googlenet",
    "load_caffe_weights",
    "load_torchvision_weights",
    "missing_weights_hint",
    "preprocessing",
    "read_torch_state_dict",
    "small_cnn",
    "torchvision_googlenet",
    "torchvision_module_names",
]
