"""Small identity folders: facenet-pl recipes against classical baselines, on one pair protocol.

Every method is scored on the same test pairs: ``train.py data=folder cv=N`` splits the people into N
identity-disjoint groups, and each run tests on its group's pairs (k-fold accuracy, the threshold fit on the
other folds of those pairs: ``test/acc_other_folds_threshold``, as no baseline has validation people). The
baselines are fit on the same runs' training people and scored on the same pairs: raw pixels, PCA
(eigenfaces), PCA + LDA (fisherfaces), all on 64 px gray images, L2-normalised.

    python benchmarks/bench_small_folders.py --root ../shared/data/att_faces --cv 5 --out ~/small/orl \\
        --recipe scratch= --recipe standard=augment=standard \\
        --recipe finetune="model.init_from=~/lfw_model.ckpt optimizer.lr=3e-4"
    python benchmarks/bench_small_folders.py --root ... --out ... --table     # the table of what is done

A recipe whose ``cv_metrics.json`` exists in OUT is not rerun (a cut-off run continues). Extra train.py overrides
for every recipe go after ``--``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_recipe(root: str, out: Path, name: str, overrides: list[str], cv: int, common: list[str]) -> None:
    run_dir = out / name
    if (run_dir / "cv_metrics.json").is_file():
        return
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=folder",
        f"data.root={root}",
        f"cv={cv}",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
        *common,
        *overrides,
    ]
    t = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    (out / f"{name}.wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - t, "rc": rc, "cmd": cmd}))
    if rc:
        print(f"{name}: train.py exited {rc}, see {out / f'{name}.log'}", file=sys.stderr)


def baselines(root: str, folds: list[list[str]], data_args: dict, size: int = 64) -> dict[str, list[dict]]:
    """Raw pixels, PCA and PCA + LDA, each fit per run on its training people, scored on its test pairs."""
    import torch
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from facenet_pl.data.folder import FolderDataModule
    from facenet_pl.evaluation import score_split

    out: dict[str, list[dict]] = {"raw pixels": [], "PCA (eigenfaces)": [], "PCA + LDA (fisherfaces)": []}
    for test_people in folds:
        dm = FolderDataModule(root=root, image_size=size, test_identities=test_people, **data_args)
        plan = dm.make_plan()
        dm.setup("fit")
        images, labels, rows, _ = dm._decode()  # labels of the readable rows of images
        gray = np.asarray(images[rows], np.float32).mean(1).reshape(len(rows), -1)
        gray = (gray - gray.mean(1, keepdims=True)) / (gray.std(1, keepdims=True) + 1e-6)
        train = np.isin(labels, plan.train_ids)
        split = dm.test_split
        test_rows = np.flatnonzero(np.isin(labels, plan.test_ids))  # the test split's dataset order
        x_train, y_train, x_test = gray[train], labels[train], gray[test_rows]
        n_classes = len(np.unique(y_train))
        pca = PCA(n_components=min(100, len(x_train) - 1), random_state=0).fit(x_train)
        pca_lda = PCA(n_components=min(len(x_train) - n_classes, 150), random_state=0).fit(x_train)
        lda = LinearDiscriminantAnalysis(n_components=n_classes - 1).fit(pca_lda.transform(x_train), y_train)
        for name, feats in (
            ("raw pixels", x_test),
            ("PCA (eigenfaces)", pca.transform(x_test)),
            ("PCA + LDA (fisherfaces)", lda.transform(pca_lda.transform(x_test))),
        ):
            emb = torch.nn.functional.normalize(torch.as_tensor(feats, dtype=torch.float32), dim=1)
            res = score_split(split, split.distances(emb))
            out[name].append({"test/acc": res["accuracy"], "test/pairs": res["pairs"], "test/auc": res["auc"]})
    return out


def _kfold_acc(m: dict) -> float:
    """The k-fold test accuracy (each fold of the test pairs at the threshold fit on the others), the one protocol
    the baselines can follow: train.py logs it as ``test/acc_other_folds_threshold`` since 2026-12-07 (``test/acc`` is
    at the validation threshold now), as ``test/acc`` before."""
    return m.get("test/acc_other_folds_threshold", m["test/acc"])


def _row(name: str, runs: list[dict], seconds: float | None = None) -> str:
    accs = [_kfold_acc(r) for r in runs]
    pairs = [r["test/pairs"] for r in runs]
    pooled = float(np.dot(accs, pairs) / sum(pairs))
    std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
    auc = statistics.mean(r["test/auc"] for r in runs)
    folds = " / ".join(f"{100 * a:.1f}" for a in accs)
    t = "" if seconds is None else f"{seconds:.0f}"
    mean = 100 * statistics.mean(accs)
    return f"| {name} | {mean:.1f}% +- {100 * std:.1f} | {100 * pooled:.1f}% | {auc:.3f} | {folds} | {t} |"


def table(out: Path, root: str | None) -> str:
    recipes = sorted(p.parent for p in out.glob("*/cv_metrics.json"))
    if not recipes:
        return "(no recipe finished yet)"
    folds = json.loads((recipes[0] / "cv_metrics.json").read_text())["cv/test_identities"]
    rows, first_runs = [], None
    for r in recipes:
        cv = json.loads((r / "cv_metrics.json").read_text())
        if cv["cv/test_identities"] != folds:
            raise SystemExit(f"{r.name} tested other people than {recipes[0].name}: rerun it with the same seed")
        runs = [json.loads((r / f"fold_{i}" / "metrics.json").read_text()) for i in range(len(folds))]
        first_runs = first_runs or runs
        wall = out / f"{r.name}.wall.json"
        secs = json.loads(wall.read_text())["wall_s"] if wall.is_file() else None
        rows.append(_row(f"facenet-pl: {r.name}", runs, secs))
    if root:
        data_args = json.loads((out / "data_args.json").read_text())
        for name, runs in baselines(root, folds, data_args).items():
            if [r["test/pairs"] for r in runs] != [r["test/pairs"] for r in first_runs]:
                raise SystemExit(f"{name}: its pairs are not the runs' (data settings differ): pass them after --")
            rows.insert(0, _row(name, runs))
    people = sum(len(f) for f in folds)
    head = (
        f"{len(folds)} runs over identity-disjoint groups of the people: {people} test people in all, each tested "
        "once\n\n"
        "| method | test accuracy (k-fold), mean +- std over runs | pooled (all test pairs) | test AUC | per run "
        "| wall s |\n"
        "|---|---|---|---|---|---|"
    )
    return "\n".join([head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="the folder: <root>/<identity>/<images>")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--recipe", action="append", default=[], help="NAME=OVERRIDES (space-separated train.py args)")
    ap.add_argument("--table", action="store_true", help="only print the table (baselines too, with --root)")
    ap.add_argument("overrides", nargs="*", help="train.py overrides for every recipe (after --)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # the data settings the baselines need to draw the same pairs as the runs (train.py's defaults otherwise)
    data_args = {"cache_dir": str(ROOT / ".cache" / "facenet_pl"), "decode_workers": 2, "seed": 42, "p": "auto"}
    for o in args.overrides:
        key, _, value = o.partition("=")
        if key.startswith("data.") and key.split(".", 1)[1] in ("val_folds", "val_pairs_per_fold", "val_identities"):
            data_args[key.split(".", 1)[1]] = int(value) if value.isdigit() else value
        if key == "seed":
            data_args["seed"] = int(value)
    if not (args.table and (args.out / "data_args.json").is_file()):  # --table: the settings the runs were made with
        (args.out / "data_args.json").write_text(json.dumps(data_args))
    if not args.table:
        for spec in args.recipe:
            name, _, rest = spec.partition("=")
            run_recipe(args.root, args.out, name, shlex.split(rest), args.cv, args.overrides)
            print(table(args.out, None), flush=True)
    print(table(args.out, args.root))


if __name__ == "__main__":
    main()
