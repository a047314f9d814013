"""Clustering embeddings into identities: k-means and agglomerative, scored by NMI, AMI, purity.

scikit-learn does the clustering and the information-theoretic scores (well-tested reference
implementations); purity is a contingency-matrix reduction.
"""

from __future__ import annotations

import numpy as np


def purity(labels_true, labels_pred) -> float:
    """Fraction of samples whose cluster's majority identity is their own."""
    from sklearn.metrics.cluster import contingency_matrix

    c = contingency_matrix(labels_true, labels_pred)
    return float(c.max(axis=0).sum() / c.sum())


def cluster_embeddings(embeddings, n_clusters: int, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Cluster labels for L2-normalised ``embeddings`` (N, D)."""
    from sklearn.cluster import AgglomerativeClustering, KMeans

    x = np.asarray(embeddings, dtype=np.float64)
    if method == "kmeans":
        return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(x)
    if method == "agglomerative":
        return AgglomerativeClustering(n_clusters=n_clusters, linkage="average").fit_predict(x)
    raise ValueError(f"clustering method must be 'kmeans' or 'agglomerative', got {method!r}")


def cluster_at_threshold(embeddings, threshold: float | None, n_clusters: int | None = None) -> np.ndarray:
    """Cluster labels of unit ``embeddings`` as the verification rule groups them: average linkage, merged while
    the clusters are closer than ``threshold`` (a squared distance, as the model's threshold is); or into
    ``n_clusters`` clusters when that is given."""
    from sklearn.cluster import AgglomerativeClustering

    x = np.asarray(embeddings)
    if len(x) < 2:
        return np.zeros(len(x), int)
    if n_clusters:
        return AgglomerativeClustering(n_clusters=n_clusters, linkage="average").fit_predict(x)
    # average linkage on Euclidean distance: the squared-distance threshold becomes its square root
    algo = AgglomerativeClustering(n_clusters=None, distance_threshold=float(np.sqrt(threshold)), linkage="average")
    return algo.fit_predict(x)


def clustering_scores(
    embeddings, labels, methods: tuple[str, ...] = ("kmeans", "agglomerative"), seed: int = 0
) -> dict[str, float]:
    """NMI, AMI and purity of each method with the true number of identities as cluster count."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    out: dict[str, float] = {}
    for m in methods:
        pred = cluster_embeddings(embeddings, k, m, seed)
        out[f"{m}/nmi"] = float(normalized_mutual_info_score(labels, pred))
        out[f"{m}/ami"] = float(adjusted_mutual_info_score(labels, pred))
        out[f"{m}/purity"] = purity(labels, pred)
    return out
