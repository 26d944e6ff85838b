"""Evaluation suite of faceveil: image-quality and identity metrics, pluggable face
embedders, and the LFW protocol that calibrates face-recognition thresholds.

Optional dependencies (evaluation only): ``scikit-image`` (SSIM), ``onnxruntime``
(ArcFace onnx embedder), ``dlib-bin`` + ``face-recognition-models`` (dlib embedder),
``ai-edge-litert`` (MobileFaceNet tflite), and the model files of ``shared/models``.
Each is imported only when used.
"""

from faceveil.evaluate.embedders import (
    ARCFACE_TEMPLATE_112,
    ArcFaceOnnxEmbedder,
    DlibEmbedder,
    Embedder,
    FaceDetection,
    TFLiteMobileFaceNetEmbedder,
    YuNetDetector,
    DlibDetector,
    evaluation_detector,
    align_face,
    available_embedders,
    find_model_file,
    get_embedder,
    register_embedder,
    select_primary_face,
    similarity_transform,
)
from faceveil.evaluate.lfw import (
    FarThreshold,
    LFWPair,
    LFWReport,
    evaluate_lfw,
    kfold_accuracy,
    parse_pairs,
    threshold_at_far,
)
from faceveil.evaluate.metrics import (
    SimilarityStats,
    cosine_similarity,
    identity_match_rate,
    pairwise_cosine,
    psnr,
    region_psnr,
    region_ssim,
    roc_auc,
    roc_curve,
    similarity_stats,
    ssim,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "ArcFaceOnnxEmbedder",
    "DlibEmbedder",
    "Embedder",
    "FaceDetection",
    "FarThreshold",
    "LFWPair",
    "LFWReport",
    "SimilarityStats",
    "TFLiteMobileFaceNetEmbedder",
    "YuNetDetector",
    "DlibDetector",
    "evaluation_detector",
    "align_face",
    "available_embedders",
    "cosine_similarity",
    "evaluate_lfw",
    "find_model_file",
    "get_embedder",
    "identity_match_rate",
    "kfold_accuracy",
    "pairwise_cosine",
    "parse_pairs",
    "psnr",
    "region_psnr",
    "region_ssim",
    "register_embedder",
    "roc_auc",
    "roc_curve",
    "select_primary_face",
    "similarity_stats",
    "similarity_transform",
    "ssim",
    "threshold_at_far",
]
