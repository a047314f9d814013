"""Evaluate a checkpoint: ``python eval.py ckpt_path=... [data=lfw data.root=...]``.

Prints the verification table (10-fold accuracy, VAL@FAR, AUC, EER) with k-NN and clustering
scores, and writes eval_metrics.json, roc.png and distances.png to the run directory.
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from facenet_pl.errors import ConfigError
from facenet_pl.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    try:
        return evaluate(cfg)["accuracy"]
    except (ConfigError, FileNotFoundError) as e:  # the user's to fix: the message, not a traceback
        logging.getLogger(__name__).error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
