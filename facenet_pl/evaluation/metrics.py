"""torchmetrics ``Metric`` wrappers: states are concatenated across DDP ranks before computing."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from facenet_pl.evaluation.clustering import clustering_scores
from facenet_pl.evaluation.recognition import knn_topk_accuracy, split_gallery_probe
from facenet_pl.evaluation.verification import evaluate_pairs


def _cat(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.cat(x) if len(x) else torch.empty(0)


class PairVerification(Metric):
    """LFW verification table from (distance, issame) pairs; see :func:`evaluate_pairs`.

    Pass each pair's fold id (``folds``, as :class:`~facenet_pl.data.pairs.VerificationSet` holds them);
    without them the pairs are cut into ``n_folds`` consecutive chunks of ``order``, which is right only
    for files laid out that way (LFW pairs.txt). ``order`` keys (e.g. the pair's index) keep that order
    when ranks see pairs out of order.
    """

    full_state_update = False

    def __init__(self, n_folds: int = 10, far_target: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_folds, self.far_target = n_folds, far_target
        self.add_state("distances", default=[], dist_reduce_fx="cat")
        self.add_state("issame", default=[], dist_reduce_fx="cat")
        self.add_state("order", default=[], dist_reduce_fx="cat")
        self.add_state("folds", default=[], dist_reduce_fx="cat")

    def update(
        self,
        distances: torch.Tensor,
        issame: torch.Tensor,
        order: torch.Tensor | None = None,
        folds: torch.Tensor | None = None,
    ) -> None:
        if order is None:
            start = sum(len(o) for o in self.order) if isinstance(self.order, list) else len(self.order)
            order = torch.arange(start, start + len(distances), device=distances.device)
        self.distances.append(distances.detach().float())
        self.issame.append(issame.detach().bool())
        self.order.append(order.detach().long())
        self.folds.append((torch.full_like(order, -1) if folds is None else folds).detach().long())

    def compute(self) -> dict[str, float]:
        order = torch.argsort(_cat(self.order), stable=True)
        d, s, f = _cat(self.distances)[order], _cat(self.issame)[order], _cat(self.folds)[order]
        if bool((f < 0).any()) and not bool((f < 0).all()):
            raise ValueError("PairVerification: give fold ids with every update or with none")
        folds = None if bool((f < 0).all()) else f.cpu().numpy()
        return evaluate_pairs(d.cpu().numpy(), s.cpu().numpy(), self.n_folds, self.far_target, folds=folds)


class _EmbeddingsAndLabels(Metric):
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        self.embeddings.append(embeddings.detach().float())
        self.labels.append(labels.detach().long())


class KNNAccuracy(_EmbeddingsAndLabels):
    """Top-k recognition accuracy with one gallery image per identity (the rest are probes)."""

    def __init__(self, ks: tuple[int, ...] = (1, 5), gallery_per_identity: int = 1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.ks, self.gallery_per_identity, self.seed = tuple(ks), gallery_per_identity, seed

    def compute(self) -> dict[str, float]:
        emb, lab = _cat(self.embeddings), _cat(self.labels)
        g, p = split_gallery_probe(lab.cpu().numpy(), self.gallery_per_identity, self.seed)
        g, p = torch.as_tensor(g, device=emb.device), torch.as_tensor(p, device=emb.device)
        return knn_topk_accuracy(emb[g], lab[g], emb[p], lab[p], self.ks)


class ClusteringQuality(_EmbeddingsAndLabels):
    """NMI / AMI / purity of k-means and agglomerative clustering with the true identity count."""

    def __init__(self, methods: tuple[str, ...] = ("kmeans", "agglomerative"), seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.methods, self.seed = tuple(methods), seed

    def compute(self) -> dict[str, float]:
        return clustering_scores(
            _cat(self.embeddings).cpu().numpy(), _cat(self.labels).cpu().numpy(), self.methods, self.seed
        )
