"""Learned object representations: image and shape encoders trained on the user's own data.

No pretrained weights exist for arbitrary 3D nuclei, and none are downloaded:
:func:`train_embedding_model` learns an encoder self-supervised (SimCLR) from
labelled images, and :func:`apply_embeddings` embeds every object of an image.

* ``kind="image"``: a small 3D CNN on fixed-size, isotropically resampled,
  intensity-normalised, masked object crops (:mod:`.object_crops`).
* ``kind="shape"``: a PointNet on area-weighted surface point clouds sampled
  from the objects' meshes, in a canonical (principal-axes) frame, not
  size-normalised (:mod:`.point_clouds`).

Models are a ``state_dict`` file plus a JSON record (architecture,
preprocessing, training parameters, seed, data and weights sha256), loaded
with ``torch.load(weights_only=True)`` (:mod:`.store`).  Embeddings are
``Embedding_Image_000``… / ``Embedding_Shape_000``… columns keyed by
``Metadata_ObjectID``.
"""

from __future__ import annotations

from dls_microscopy.features.embeddings.inference import apply_embeddings
from dls_microscopy.features.embeddings.object_crops import CropSpec, intensity_range, iter_object_crops
from dls_microscopy.features.embeddings.point_clouds import (
    canonical_frame,
    iter_object_points,
    sample_surface,
)
from dls_microscopy.features.embeddings.store import ModelRecord, load_model, read_record, sha256_file
from dls_microscopy.features.embeddings.training import TrainingSample, nt_xent, train_embedding_model

__all__ = [
    "CropSpec",
    "ModelRecord",
    "TrainingSample",
    "apply_embeddings",
    "canonical_frame",
    "intensity_range",
    "iter_object_crops",
    "iter_object_points",
    "load_model",
    "nt_xent",
    "read_record",
    "sample_surface",
    "sha256_file",
    "train_embedding_model",
]
