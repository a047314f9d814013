"""Evaluation of embeddings: verification (k-fold accuracy) and collectors for DDP."""

from facenet_pl.evaluation.collector import EmbeddingCollector
from facenet_pl.evaluation.verification import best_threshold, kfold_accuracy

__all__ = ["EmbeddingCollector", "best_threshold", "kfold_accuracy"]
