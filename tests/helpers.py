"""Shared test helpers: the tiny settings, ways to run the entry points (a new interpreter, or in this one), and
callbacks importable from Hydra configs (``+callbacks.x._target_=tests.helpers.X``)."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
#: Synthetic data small enough for a CPU step in well under a second (24 training identities x 4 images).
TINY = [
    "data.train_identities=24",
    "data.train_images_per_identity=4",
    "data.val_identities=20",
    "data.val_images_per_identity=3",
    "data.val_pairs_per_fold=4",
    "data.test_identities=20",
    "data.test_images_per_identity=3",
    "data.p=4",
    "data.k=3",
    "callbacks.progress_bar.refresh_rate=0",
]
#: Identity data (data=folder / data=rec) of 32 people x 4 images split like TINY: 4 validation and 4 test people, 24
#: to train on, P x K = 4 x 3.
SMALL_IDENTITY_DATA = [
    "data.decode_workers=0",
    "data.val_identities=4",
    "data.test_identities=4",
    "data.val_pairs_per_fold=4",
    "data.batches_per_epoch=null",
    "data.p=4",
    "data.k=3",
    "callbacks.progress_bar.refresh_rate=0",
]
ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def run_script(
    script: str, run_dir: Path, *overrides: str, timeout: int = 300, new_process: bool = False
) -> subprocess.CompletedProcess:
    """``python <script> hydra.run.dir=<run_dir> <overrides>``: in this interpreter (:func:`run_entry`), or with
    ``new_process`` in a new one, exactly what a user types (for what needs a process: kill -9, DDP, imports)."""
    if not new_process:
        return run_entry(script, f"hydra.run.dir={run_dir}", *overrides)
    cmd = [sys.executable, str(ROOT / script), f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def run_train(tmp_path: Path, *overrides: str, timeout: int = 300, new_process: bool = False):
    """train.py with the TINY settings (:func:`run_script`)."""
    return run_script("train.py", tmp_path, *TINY, *overrides, timeout=timeout, new_process=new_process)


def run_entry(
    script: str, *argv: str, env: dict[str, str | None] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """``python <script> <argv>`` run in this interpreter: the script's own ``@hydra.main`` parses ``argv``
    (``-m`` multiruns and sweepers included), sets up Hydra's run directory and logging and exits as the
    script would, without ~10 s of imports for a new process. Returns what :func:`subprocess.run` would: the
    exit code, stdout and stderr. ``cwd``: the working directory. ``env``: variables set (None removes one)
    for the duration of the call. The environment, working directory and logging are restored afterwards."""
    import contextlib
    import io
    import logging
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level
    saved_argv, saved_env, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    GlobalHydra.instance().clear()
    try:
        sys.argv = [str(ROOT / script), *argv]
        os.environ.update({"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"})
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        for handler in root_logger.handlers:
            if handler not in saved_handlers:
                handler.close()
        root_logger.handlers[:] = saved_handlers
        root_logger.setLevel(saved_level)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())


def run_cli(*args) -> subprocess.CompletedProcess:
    """``facenet-pl ARGS`` in this interpreter: the exit code, stdout and stderr, as :func:`subprocess.run` gives."""
    import contextlib
    import io

    from facenet_pl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors
            code = e.code
    return subprocess.CompletedProcess(["facenet-pl", *map(str, args)], code, out.getvalue(), err.getvalue())


def tiny_datamodule(**overrides):
    """The TINY synthetic data module (24 training identities x 4 images, P=4, K=3), as train.py builds it."""
    from facenet_pl.data.synthetic_datamodule import SyntheticFaceDataModule

    args = dict(
        train_identities=24,
        train_images_per_identity=4,
        val_identities=20,
        val_images_per_identity=3,
        val_pairs_per_fold=4,
        p=4,
        k=3,
        seed=42,
    )
    return SyntheticFaceDataModule(**{**args, **overrides})


def tiny_labels() -> np.ndarray:
    """Labels of the TINY training set, rendered as train.py renders them."""
    dm = tiny_datamodule()
    dm.setup("fit")
    return dm.train_set.labels.numpy()


def tiny_module(**overrides):
    """A FaceNetModule small enough to build and step in milliseconds (``overrides``: other constructor arguments,
    e.g. ``scheduler={...}``)."""
    from facenet_pl.training.module import FaceNetModule

    args = {
        "backbone": {"name": "facenet_small", "input_size": 32, "kwargs": {"widths": [8, 8, 8, 8]}},
        "model": {"embedding_dim": 8},
        "miner": {"_target_": "facenet_pl.mining.SemiHardMiner"},
        "loss": {"_target_": "facenet_pl.losses.TripletLoss"},
        "optimizer": {"_target_": "torch.optim.AdamW"},
    }
    return FaceNetModule(**{**args, **overrides})


class InjectNaNWeights(Callback):
    """Fault injection: poison the weights at ``step`` so the loss becomes NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.head.weight.fill_(float("nan"))


class PoisonBeforeValidation(Callback):
    """Fault injection: NaN in the head's weights at the first validation batch (after the guards' read at the start
    of validation: what only the validation's own check can see)."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and batch_idx == 0:
            with torch.no_grad():
                pl_module.net.head.weight.fill_(float("nan"))


class ScaleWeights(Callback):
    """Fault injection: multiply every weight by ``factor`` before training step ``step`` (exploding weights)."""

    def __init__(self, step: int, factor: float) -> None:
        self.step, self.factor = step, factor

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.net.parameters():
                    p.mul_(self.factor)


class RecordBatches(Callback):
    """Appends a JSON line per trained batch to ``path``: epoch, global step after it, batch_idx, dataset
    indices, loss. ``kill_at_step``: SIGKILL this process right after recording that step (before any
    checkpoint of that step is written: Lightning runs checkpoint callbacks last). ``weights``: where to
    save the final weights when training ends."""

    def __init__(self, path: str, kill_at_step: int | None = None, weights: str | None = None) -> None:
        self.path, self.kill_at_step, self.weights = path, kill_at_step, weights

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import json

        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "batch_idx": batch_idx,
            "rank": trainer.global_rank,
            "idx": batch[2].tolist(),
            "loss": float(outputs["loss"]),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.kill_at_step is not None and trainer.global_step == self.kill_at_step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, trainer, pl_module):
        if self.weights:
            torch.save({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}, self.weights)


def read_batches(path) -> list[dict]:
    import json
    from pathlib import Path

    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class InterruptAt(Callback):
    """Fault injection: raise KeyboardInterrupt (what Ctrl-C does) after training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class SigtermAt(Callback):
    """Fault injection: the process sends itself SIGTERM (what a scheduler or ``kill`` does) before validation
    batch ``batch`` of epoch ``epoch`` (not the sanity check)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        import signal

        if not trainer.sanity_checking and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def write_face_folders(root, identities: int, per_identity: int, seed: int = 3):
    """Rendered synthetic faces saved as PNG files in ``root/person<label>/<i>.png`` (CLI inputs)."""
    from PIL import Image

    from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split

    x, y = generate_split(identities, per_identity, seed=seed, split="test", cfg=SyntheticFaceConfig(image_size=64))
    for i, (img, lab) in enumerate(zip(x.numpy(), y.numpy())):
        (root / f"person{lab}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(root / f"person{lab}" / f"{i}.png")
    return root


def compose_in_process(config: str, output_dir, overrides) -> DictConfig:  # noqa: F821
    """Compose ``conf/<config>.yaml`` as train.py / eval.py would, writing to ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg.copy())  # ${hydra:runtime.cwd} (paths.data_dir) resolves as in a run
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]  # resolved only under @hydra.main; nothing in train()/evaluate() reads it
    return cfg


def train_in_process(tmp_path, *overrides, logger: bool = False, tiny: bool = True):
    """Call ``train`` on the composed train.yaml (TINY synthetic settings unless ``tiny=False``): train.py's
    code path without a new interpreter (tests/run/test_train_e2e.py covers train.py itself)."""
    from omegaconf import open_dict

    from facenet_pl.run.fit import train

    cfg = compose_in_process("train", tmp_path, [*(TINY if tiny else []), *overrides])
    if not logger:
        with open_dict(cfg):
            cfg.logger = None
    write_hydra_record(tmp_path, cfg)
    return train(cfg)


def write_hydra_record(run_dir, cfg) -> None:
    """The run folder's ``.hydra/config.yaml`` and ``hydra.yaml`` as ``@hydra.main`` writes them (the composed
    config unresolved; the runtime folders), so eval.py reads the data paths a checkpoint of this run names."""
    from omegaconf import OmegaConf

    record = Path(run_dir) / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml")
    runtime = {"cwd": os.getcwd(), "output_dir": str(Path(run_dir).absolute())}
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": runtime}}), record / "hydra.yaml")


def in_fork(fn, *args, what: str = "the forked run", timeout: float = 240) -> tuple[int | None, object]:
    """``fn(*args)`` in a fork of this process: a process of its own (its own pid, so W&B, which keeps
    per-process state, starts afresh; a kill -9 kills it alone) without ~8 s of imports for a new interpreter.
    The child keeps one torch thread (:func:`one_torch_thread`), so no OpenMP thread pool crosses the fork.
    Returns the child's exit code as :mod:`subprocess` reports it (0, or -9 when SIGKILLed) and what ``fn``
    returned (picklable; None if it did not return). An exception in the child is printed and exits 1; a
    child still running after ``timeout`` seconds is killed and the test fails."""
    import multiprocessing
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.pkl"
        proc = multiprocessing.get_context("fork").Process(target=_forked, args=(result, fn, args))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise AssertionError(f"{what} did not end within {timeout} s")
        return proc.exitcode, pickle.loads(result.read_bytes()) if result.is_file() else None


def _forked(result: Path, fn, args) -> None:
    import pickle
    import traceback

    torch.set_num_threads(1)
    code = 0
    try:
        result.write_bytes(pickle.dumps(fn(*args)))
    except BaseException:  # noqa: BLE001 - reported through the exit code; the parent test asserts on it
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)  # never return into the forked copy of pytest


def run_entry_in_fork(
    script: str, *argv: str, env: dict[str, str | None] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """:func:`run_entry` in a new process without a new interpreter (:func:`in_fork`)."""
    code, out = in_fork(
        functools.partial(run_entry, env=env, cwd=cwd), script, *argv, what=f"{script} {' '.join(argv)}"
    )
    return out if out is not None else subprocess.CompletedProcess([script, *argv], code, "", "the run failed")


def train_in_forked_process(tmp_path, *overrides, logger: bool = False) -> int:
    """:func:`train_in_process` in a new process without a new interpreter (:func:`in_fork`), for a run that
    must die by a signal: returns its exit code (-9: SIGKILL)."""
    code, _ = in_fork(functools.partial(train_in_process, logger=logger), tmp_path, *overrides, what="training")
    return code


@contextlib.contextmanager
def one_torch_thread():
    """torch on one intra-op thread inside the block (as in an :func:`in_fork` child), so that runs compared
    step by step with a forked one sum floats in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_error_in_process(tmp_path, *overrides, tiny: bool = True) -> str:
    """Run :func:`train_in_process`, which must fail with an error that is the user's to fix; return the one
    line train.py would print after ``error:`` (``facenet_pl.utils.errors.exit_on_user_error``)."""
    from facenet_pl.utils.errors import user_error_message

    try:
        train_in_process(tmp_path, *overrides, tiny=tiny)
    except Exception as e:  # noqa: BLE001
        message = user_error_message(e)
        assert message is not None, f"train.py would print a traceback for {type(e).__name__}: {e}"
        assert "\n" not in message, message
        return message
    raise AssertionError("training succeeded; an error was expected")


def eval_in_process(model, out, *overrides):
    """Call ``evaluate`` on the composed eval.yaml: eval.py's code path without a new interpreter."""
    from facenet_pl.run.evaluate import evaluate

    return evaluate(compose_in_process("eval", out, [f"ckpt_path={model}", *overrides]))


class RecordRendered(Callback):
    """Appends to ``path`` how many synthetic images each split has rendered, after every training batch
    and at the end of fit (JSON lines ``{"at": ..., "train": n, "val": n, "test": n}``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, trainer, at: str) -> None:
        import json

        dm = trainer.datamodule
        row = {
            "at": at,
            "train": dm.train_set.rendered,
            "val": dm.val_split.dataset.rendered if dm.val_split is not None else None,
            "test": dm.test_split.dataset.rendered if dm.test_split is not None else None,
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._write(trainer, f"step{trainer.global_step}")

    def on_fit_end(self, trainer, pl_module):
        self._write(trainer, "fit_end")


class EmbedAtTrainStart(Callback):
    """Saves to ``path`` (``.npy``) the embeddings, in eval mode, of a fixed batch of random uint8 images at the
    network's input size, when training starts (before the first step): the weights a run starts from."""

    def __init__(self, path: str, n: int = 6, seed: int = 0) -> None:
        self.path, self.n, self.seed = path, n, seed

    def on_train_start(self, trainer, pl_module):
        size = pl_module.input_size
        images = torch.from_numpy(fixed_images(self.n, size, self.seed))
        was_training = pl_module.training
        pl_module.eval()
        np.save(self.path, pl_module.embed(images).cpu().numpy())
        pl_module.train(was_training)


def fixed_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images (n, 3, size, size), the same for the same arguments."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@contextlib.contextmanager
def read_only_folder(path: Path, files: dict[str, bytes] | None = None):
    """``path`` as a read-only folder holding ``files`` (name -> bytes): as root (where permissions do not stop a
    write) a tmpfs mounted read-only, so writes fail with EROFS as on a read-only filesystem; else a folder made
    read-only with chmod. Skips the test where neither is possible."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        for name, data in (files or {}).items():
            (path / name).write_bytes(data)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no privileges): no read-only folder to test with")
    try:
        for name, data in (files or {}).items():
            (path / name).write_bytes(data)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "3m"):
    """A tmpfs of ``size`` mounted at ``path`` (root only): writes beyond it fail with ENOSPC, as on a full disk.
    Skips the test where mounting is not allowed."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs a tmpfs mount (root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a tmpfs here (no privileges): no full filesystem to test with")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class ScoreAt(Callback):
    """A monitored value the test chooses: logs ``name`` = ``scores[epoch]`` at each validation's end, before the
    checkpoint callbacks read it (Lightning runs them last), so which epoch is best does not depend on training."""

    def __init__(self, scores: list[float], name: str = "chosen/score") -> None:
        self.scores, self.name = [float(s) for s in scores], name

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log(self.name, self.scores[trainer.current_epoch])


class ScrambleHeadAt(Callback):
    """Fault injection: re-draw the embedding head's weights when epoch ``epoch`` starts, so that epoch validates
    badly (a resumed run's later epoch that must not be taken for the best)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.net.head.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))


class RecordWeights(Callback):
    """Saves the module's raw weights (``state_dict``) when training starts and after every optimiser step as
    ``<dir>/step<N>.pt``, and what the module holds when testing starts as ``<dir>/test.pt``: what was trained, what
    a weight-averaging callback averaged and what the test scored, read independently of the code under test."""

    def __init__(self, dir: str) -> None:
        self.dir = dir

    def _save(self, pl_module, name: str) -> None:
        torch.save({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}, f"{self.dir}/{name}.pt")

    def on_train_start(self, trainer, pl_module):
        self._save(pl_module, f"step{trainer.global_step}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._save(pl_module, f"step{trainer.global_step}")

    def on_test_start(self, trainer, pl_module):
        self._save(pl_module, "test")
