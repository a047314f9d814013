"""Train a FaceNet embedding: ``python train.py [group=option ...] [key=value ...]``.

Examples:
    python train.py                                   # built-in synthetic faces, CPU
    python train.py backbone=inception miner=semihard
    python train.py -m loss.margin=0.1,0.2,0.4 model.embedding_dim=64,128
"""

import hydra
from omegaconf import DictConfig

from facenet_pl.run.dirs import register_hydra
from facenet_pl.utils.errors import exit_on_user_error

register_hydra()  # ${unique_dir:...} (run directories never shared) and model.*'s schema


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error(__name__):
        from facenet_pl.run.config_checks import check_config_early

        check_config_early(cfg)  # no torch yet: a typo costs a second (benchmarks/bench_error_latency.py), not ten
        # torch and Lightning load only now, after the config passed its cheap checks
        from facenet_pl.run.fit import optimized_value, train

        return optimized_value(cfg, train(cfg))


if __name__ == "__main__":
    import sys

    from facenet_pl.run.dirs import (
        discard_resume_record,
        lock_run_dir,
        release_run_lock,
        resume_record_argv,
        unwritable_output,
    )

    # Before Hydra writes anything: a run directory that cannot be written (Hydra would print a traceback), one
    # train.py per run directory, and a resume's record kept beside the run's original one.
    problem = unwritable_output(sys.argv[1:]) or lock_run_dir(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    sys.argv = [sys.argv[0], *resume_record_argv(sys.argv[1:])]
    try:
        main()
    finally:
        discard_resume_record()  # a resume that was refused (or never got past its checks) leaves no trace
        release_run_lock()
