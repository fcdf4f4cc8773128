"""FaceLab models: a registry of architectures and heads, dlib's face embedder, and the reference
gender model.

    from core.models import build_model, list_models, ARCH_DEFAULTS
    model = build_model("resnet18", num_classes=5, pretrained=True, head="mlp", freeze="last:2")
"""
from __future__ import annotations

from core.models.registry import (ARCH_DEFAULTS, IMAGENET_MEAN, IMAGENET_STD, ModelSpec,
                                  build_model, freeze_choices, get_model_spec, get_penultimate,
                                  is_embedding, list_models, register_model,
                                  trainable_parameter_names)
from core.models.heads import HEADS, build_head, build_head_for_embeddings
from core.models.imagenet import WeightsUnavailable, load_imagenet_state_dict, weights_path
from core.models.torchvision_models import FaceClassifier, imagenet_available, imagenet_weights
from core.models.dlib_face import DlibFaceEmbedder, DlibFaceModel, embed_faces, get_embedder
from core.models.gender_reference import REFERENCE_GENDER_NAME, ReferenceGender

__all__ = [
    "ARCH_DEFAULTS", "HEADS", "IMAGENET_MEAN", "IMAGENET_STD", "ModelSpec", "build_model",
    "freeze_choices", "get_model_spec", "get_penultimate", "is_embedding", "list_models",
    "register_model", "trainable_parameter_names", "build_head", "build_head_for_embeddings",
    "WeightsUnavailable", "load_imagenet_state_dict", "weights_path", "FaceClassifier",
    "imagenet_available", "imagenet_weights", "DlibFaceEmbedder", "DlibFaceModel", "embed_faces", "get_embedder",
    "REFERENCE_GENDER_NAME", "ReferenceGender",
]
