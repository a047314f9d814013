"""Evaluate a checkpoint: ``python eval.py ckpt_path=... [data=lfw data.root=...]``.

Prints the verification table (10-fold accuracy, VAL@FAR, AUC, EER) with k-NN and clustering
scores, and writes eval_metrics.json, roc.png and distances.png to the run directory.
"""

import hydra
from omegaconf import DictConfig

from facenet_pl.run.dirs import register_hydra
from facenet_pl.utils.errors import exit_on_user_error

register_hydra()  # ${unique_dir:...} (run directories never shared) and model.*'s schema


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with exit_on_user_error(__name__):
        from facenet_pl.run.config_checks import check_config_early

        check_config_early(cfg, task="eval")  # keys left at ???, a train.py experiment: before torch loads
        from facenet_pl.run.evaluate import evaluate

        return evaluate(cfg)["accuracy"]


if __name__ == "__main__":
    import sys

    from facenet_pl.run.dirs import unwritable_output

    if (problem := unwritable_output(sys.argv[1:])) is not None:  # before Hydra, which would print a traceback
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    main()
