"""Evaluation of embeddings: verification, k-NN recognition, clustering, and DDP-ready metrics."""

from facenet_pl.evaluation.clustering import cluster_embeddings, clustering_scores, purity
from facenet_pl.evaluation.collector import EmbeddingCollector
from facenet_pl.evaluation.recognition import knn_topk_accuracy, split_gallery_probe
from facenet_pl.evaluation.splits import (
    LOGGED_BIN_METRICS,
    LOGGED_PAIR_METRICS,
    accuracy_at,
    logged_metrics,
    score_split,
)
from facenet_pl.evaluation.verification import best_threshold, evaluate_pairs, kfold_accuracy, threshold_at_far

__all__ = [
    "LOGGED_BIN_METRICS",
    "LOGGED_PAIR_METRICS",
    "EmbeddingCollector",
    "logged_metrics",
    "accuracy_at",
    "score_split",
    "best_threshold",
    "cluster_embeddings",
    "clustering_scores",
    "evaluate_pairs",
    "kfold_accuracy",
    "knn_topk_accuracy",
    "purity",
    "split_gallery_probe",
    "threshold_at_far",
]
