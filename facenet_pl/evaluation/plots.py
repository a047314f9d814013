"""ROC curve and same/different distance histograms as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet_pl.utils.fileio import atomic_output


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Fixed margins for a 5 x 4 inch figure with axis labels and a title (tight_layout would draw the figure twice:
# half the cost of a plot)
_MARGINS = dict(left=0.13, right=0.97, bottom=0.12, top=0.92)


def save_roc(distances, issame, path: str | Path, title: str = "ROC") -> Path:
    """ROC (TAR against FAR, log FAR axis) of "same iff distance < t", drawn only where the pairs can measure it.

    With N different-person pairs the smallest false accept rate that is not 0 is 1/N: the curve starts there
    (a dotted line marks it), so no point claims a rate the pairs cannot show (FAR 0 has no place on a log axis).
    """
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    d, s = np.asarray(distances, float), np.asarray(issame, bool)
    n_diff = int((~s).sum())
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    fig.subplots_adjust(**_MARGINS)
    if n_diff and s.any():
        fpr, tpr, _ = roc_curve(s, -d, drop_intermediate=False)
        floor = 1.0 / n_diff
        measurable = fpr >= floor
        ax.plot(fpr[measurable], tpr[measurable], label=f"AUC {auc(fpr, tpr):.4f}")
        ax.axvline(floor, ls=":", color="gray", label=f"smallest FAR the pairs measure: 1/{n_diff}")
        ax.set_xlim(floor / 1.5, 1.05)
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ROC: needs same and different pairs", ha="center", transform=ax.transAxes)
    ax.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate", title=title, ylim=(0, 1.01))
    ax.minorticks_off()  # 50 minor ticks of a log axis: half the cost of drawing this plot
    ax.grid(alpha=0.3)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def save_distance_histogram(
    distances,
    issame,
    path: str | Path,
    threshold: float | None = None,
    title: str = "pair distances",
    threshold_label: str = "threshold",
) -> Path:
    """Histograms of squared distances of same-identity and different-identity pairs; ``threshold_label`` says which
    threshold the dashed line is (the stored one, or the mean of the folds' thresholds)."""
    plt = _plt()
    d, s = np.asarray(distances, float), np.asarray(issame, bool)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    fig.subplots_adjust(**_MARGINS)
    bins = np.linspace(d.min(), d.max(), 50) if d.size else 10
    ax.hist(d[s], bins=bins, alpha=0.6, label="same", histtype="stepfilled")
    ax.hist(d[~s], bins=bins, alpha=0.6, label="different", histtype="stepfilled")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", label=f"{threshold_label} {threshold:.3f}")
    ax.set(xlabel="squared distance", ylabel="pairs", title=title)
    ax.legend()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def save_pair_plots(
    distances, split, out_dir: str | Path, threshold: float | None, prefix: str, threshold_label: str = "threshold"
) -> dict[str, Path]:
    """``roc.png`` and ``distances.png`` of a :class:`~facenet_pl.data.pairs.VerificationSet`'s reported pairs in
    ``out_dir``, keyed ``<prefix>/roc`` and ``<prefix>/distances`` for :func:`log_images`."""
    keep = split.tested()
    d, s = np.asarray(distances)[keep], split.issame[keep]
    return {
        f"{prefix}/roc": save_roc(d, s, Path(out_dir) / "roc.png"),
        f"{prefix}/distances": save_distance_histogram(
            d, s, Path(out_dir) / "distances.png", threshold, threshold_label=threshold_label
        ),
    }


def save_tsne(embeddings: np.ndarray, identities: list[str], path: str | Path) -> Path:
    """t-SNE of ``embeddings`` coloured by identity (20 colours x 6 markers: up to 120 identities look apart;
    names in the legend up to 40), written whole or not at all."""
    plt = _plt()
    from sklearn.manifold import TSNE

    names, codes = np.unique(identities, return_inverse=True)
    n = len(embeddings)
    xy = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (n - 1) / 3)), init="pca", random_state=0).fit_transform(
        embeddings
    )
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    colours, markers = plt.get_cmap("tab20").colors, "osD^vP"
    for c in np.unique(codes):
        at = codes == c
        label = names[c] if len(names) <= 40 else None
        ax.scatter(xy[at, 0], xy[at, 1], color=colours[c % 20], marker=markers[(c // 20) % 6], s=14, label=label)
    if len(names) <= 40:
        ax.legend(fontsize=6, loc="best", markerscale=0.8, ncol=2 if len(names) > 20 else 1)
    ax.set(title=f"t-SNE of {n} embeddings, {len(names)} identities", xticks=[], yticks=[])
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(path)


def log_images(loggers, images: dict[str, Path], step: int | None = None) -> None:
    """Send PNGs to the loggers that take images (W&B, TensorBoard); the CSV logger keeps files only."""
    for lg in loggers or []:
        name = type(lg).__name__
        if name == "WandbLogger":
            lg.log_image(key="eval", images=[str(p) for p in images.values()], caption=list(images), step=step)
        elif name == "TensorBoardLogger":
            from PIL import Image

            for key, p in images.items():
                arr = np.asarray(Image.open(p).convert("RGB"))
                lg.experiment.add_image(key, arr, global_step=step or 0, dataformats="HWC")
