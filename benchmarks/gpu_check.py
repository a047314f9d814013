"""Everything that needs a GPU, in one run (at most ~8 minutes on an H100/H200); a table printed last.

    python benchmarks/gpu_check.py --out $OUT          # on the GPU machine (see ../shared/device/README.md)
    python benchmarks/gpu_check.py --cpu --out /tmp/x  # tiny sizes on the CPU: the smoke test make test runs

Sections (each timed and logged under ``--out``; a failing one is reported and the others still run):
1. throughput: the train.py loop (Lightning, FaceNetModule, PK DataLoader, CSV logger, checkpoints) against a
   plain PyTorch loop on the same batches already on the device, for facenet_small, resnet18 and inception_v3 at
   160 px, bf16 autocast, channels_last; img/s and their ratio.
2. syncs: ``torch.cuda.set_sync_debug_mode("warn")`` over 20 real ``train.py trainer=gpu`` steps
   (``facenet_pl.run.callbacks.CudaSyncCounter``): how many host syncs CUDA reports, and where.
3. mining: semi-hard at B = 1,800 (45 x 40), 128-d: ours against pytorch-metric-learning's, ms.
4. decode: ``data.decode_on=device`` (nvjpeg, one batched decode_jpeg) against PIL decoding in DataLoader workers
   on the machine's cores, img/s.
5. guards: benchmarks/bench_guards.py on the device (inception_v3).
6. ddp: a short ``train.py trainer=ddp`` run when the machine has more than one GPU (else: skipped, said so).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS: list[dict] = []


def record(section: str, what: str, value: str, note: str = "") -> None:
    RESULTS.append({"section": section, "what": what, "value": value, "note": note})
    print(f"[{section}] {what}: {value} {note}", flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- 1. throughput --------------------------------------------------------------------------------------------


def _module(backbone: str, size: int):
    """The module bench_train_overhead.py times (same miner, loss, optimiser, schedule), at this size."""
    from bench_train_overhead import build

    kwargs = {"widths": [16, 32, 64, 128]} if backbone == "facenet_small" else {}
    return build({"name": backbone, "input_size": size, "kwargs": kwargs})


def _in_memory_data(n_ids: int, per: int, size: int, p: int, k: int):
    """A data module over random uint8 faces held in memory (what a decode cache gives): no decoding cost."""
    from facenet_pl.data.datamodule import FaceDataModule
    from facenet_pl.data.datasets import InMemoryFaceDataset

    class InMemory(FaceDataModule):
        def setup(self, stage=None):
            if self.train_set is None:
                g = torch.Generator().manual_seed(0)
                images = torch.randint(0, 256, (n_ids * per, 3, size, size), dtype=torch.uint8, generator=g)
                self.train_set = InMemoryFaceDataset(images, torch.arange(n_ids).repeat_interleave(per))

    dm = InMemory(p=p, k=k, num_workers=0)
    dm.pin_memory = torch.cuda.is_available()
    dm.setup("fit")
    return dm


def plain_loop(module, dm, device, steps: int, warmup: int, bf16: bool) -> float:
    """img/s of a hand-written loop over the same PK batches, every batch on the device before timing."""
    module = module.to(device).train()
    sampler = dm._batch_sampler()
    sampler.set_epoch(0)
    batches = []
    for idx in list(iter(sampler))[: warmup + steps]:
        images, labels, _ = dm.train_set.__getitems__(idx)
        batches.append((images.to(device), labels.to(device)))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=5e-4)
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 0
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0, n = time.perf_counter(), 0
        with torch.autocast(device.type, dtype=dtype, enabled=bf16):
            emb = module(module._inputs(images, augment=True))
            loss, _ = module.criterion(emb.float(), module.miner(emb, labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(labels)
    _sync(device)
    return n / (time.perf_counter() - t0)


def lightning_loop(module, dm, device, steps: int, warmup: int, bf16: bool, out: Path) -> float:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    class Clock(Callback):
        t0 = t1 = None
        n = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup and self.t0 is None:
                _sync(device)
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync(device)
            self.t1 = time.perf_counter()
            self.n = (trainer.global_step - warmup) * dm.p * dm.k

    clock = Clock()
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=50,
        logger=CSVLogger(str(out), name="csv"),
        callbacks=[clock, ModelCheckpoint(dirpath=str(out / "ckpt"), save_last=True)],
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=dm)
    return clock.n / (clock.t1 - clock.t0)


def section_throughput(device, out: Path, cpu: bool) -> None:
    configs = (
        [("facenet_small", 32, 4, 4, 3, 2)]
        if cpu
        else [
            ("facenet_small", 160, 32, 8, 30, 10),
            ("resnet18", 160, 32, 8, 30, 10),
            ("inception_v3", 160, 32, 8, 20, 8),
        ]
    )
    for backbone, size, p, k, steps, warmup in configs:
        dm = _in_memory_data(max(4 * p, 64), max(k, 8), size, p, k)
        bf16 = device.type == "cuda"
        plain = plain_loop(_module(backbone, size), dm, device, steps, warmup, bf16)
        light = lightning_loop(_module(backbone, size), dm, device, steps, warmup, bf16, out / backbone)
        what = f"{backbone} {size}px, batch {p}x{k}, {'bf16' if bf16 else 'fp32'}, channels_last"
        record("throughput", what, f"train.py loop {light:.0f} img/s, plain {plain:.0f} img/s", f"{light / plain:.2f}x")


# -- 2. syncs in train.py -------------------------------------------------------------------------------------


def section_syncs(device, out: Path, cpu: bool) -> None:
    path = out / "syncs.json"
    steps = 3 if cpu else 20
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"trainer={'cpu' if cpu else 'gpu'}",
        f"trainer.max_steps={5 + steps + 1}",
        "trainer.max_epochs=-1",
        "test=false",
        "data.val_identities=20",
        "data.val_images_per_identity=2",
        "data.val_pairs_per_fold=2",
        "callbacks.progress_bar.refresh_rate=0",
        "+callbacks.syncs._target_=facenet_pl.run.callbacks.CudaSyncCounter",
        f"+callbacks.syncs.path={path}",
        f"+callbacks.syncs.steps={steps}",
        f"hydra.run.dir={out / 'train_run'}",
    ]
    if cpu:
        cmd += ["data.train_identities=16", "data.p=4", "data.k=4", "data.image_size=32"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (out / "syncs.log").write_text(r.stdout + r.stderr)
    if r.returncode:
        raise RuntimeError(f"train.py exited {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1]}")
    res = json.loads(path.read_text())
    if res["syncs"] is None:
        record("syncs", f"train.py, {res['steps']} steps", "n/a (no CUDA)")
    else:
        top = sorted(res["by_site"].items(), key=lambda kv: -kv[1])[:3]
        where = "; ".join(f"{Path(k).name} x{v}" for k, v in top)
        record("syncs", f"train.py trainer=gpu, {res['steps']} steps", f"{res['syncs']} syncs", where)


# -- 3. mining ------------------------------------------------------------------------------------------------


def section_mining(device, out: Path, cpu: bool) -> None:
    from pytorch_metric_learning import miners

    from facenet_pl.mining import SemiHardMiner

    ids, k = (6, 12) if cpu else (45, 40)
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(ids * k, 128, generator=g), dim=1).to(device)
    labels = torch.arange(ids).repeat_interleave(k).to(device)
    for name, miner in (
        ("ours (semi-hard, one negative per pair)", SemiHardMiner()),
        ("pytorch-metric-learning TripletMarginMiner(semihard)", miners.TripletMarginMiner(0.2, "semihard")),
    ):
        miner(emb, labels)
        _sync(device)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            miner(emb, labels)
            _sync(device)
            times.append(time.perf_counter() - t)
        record("mining", f"B={ids * k} ({ids}x{k}), 128-d: {name}", f"{1000 * sorted(times)[2]:.2f} ms")


# -- 4. decode on the device ----------------------------------------------------------------------------------


def section_decode(device, out: Path, cpu: bool) -> None:
    from PIL import Image

    from facenet_pl.data.device_decode import decode_on_device
    from facenet_pl.data.images import EncodedImage, decode_images

    n, size = (64, 64) if cpu else (4096, 112)
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(n):
        side = int(rng.integers(112, 251))
        img = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    batch = 256 if not cpu else 32
    decode_on_device(tensors[:batch], device, size)
    _sync(device)
    t = time.perf_counter()
    for s in range(0, n, batch):
        decode_on_device(tensors[s : s + batch], device, size)
    _sync(device)
    on_device = n / (time.perf_counter() - t)
    workers = 0 if cpu else (os.cpu_count() or 1)
    t = time.perf_counter()
    decode_images([EncodedImage(b, str(i)) for i, b in enumerate(jpegs)], size, num_workers=workers)
    on_cores = n / (time.perf_counter() - t)
    record(
        "decode",
        f"{n} JPEGs (112-250 px) to {size} px",
        f"decode_on=device {on_device:.0f} img/s, PIL on {max(workers, 1)} core(s) {on_cores:.0f} img/s",
        f"{on_device / on_cores:.2f}x",
    )


# -- 5. guards, 6. ddp ----------------------------------------------------------------------------------------


def section_guards(device, out: Path, cpu: bool) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_guards.py"), "--device", device.type]
    cmd += ["--backbone", "facenet_small", "--repeat", "3"] if cpu else ["--repeat", "30"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    (out / "guards.log").write_text(r.stdout + r.stderr)
    if r.returncode:
        raise RuntimeError((r.stderr.strip().splitlines() or ["bench_guards failed"])[-1])
    for line in r.stdout.splitlines():
        if line.startswith("| before") or line.startswith("| after"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            record("guards", cells[0], f"{cells[1]} ops, {cells[2]} ms", cells[3])


def section_ddp(device, out: Path, cpu: bool) -> None:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        record("ddp", "trainer=ddp", "skipped", f"{gpus} GPU(s) on this machine")
        return
    cmd = [sys.executable, str(ROOT / "train.py"), "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=1"]
    cmd += ["callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={out / 'ddp_run'}"]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (out / "ddp.log").write_text(r.stdout + r.stderr)
    record("ddp", "train.py trainer=ddp devices=2, 1 epoch", f"exit {r.returncode}", f"{time.perf_counter() - t:.0f} s")


SECTIONS = {
    "throughput": section_throughput,
    "syncs": section_syncs,
    "mining": section_mining,
    "decode": section_decode,
    "guards": section_guards,
    "ddp": section_ddp,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (the smoke test)")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections only")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.cpu and not torch.cuda.is_available():
        print("no CUDA device here: run with --cpu for the smoke test", file=sys.stderr)
        return 2
    device = torch.device("cpu" if a.cpu else "cuda")
    about = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {about}, torch {torch.__version__}, {os.cpu_count()} cores", flush=True)
    failed = 0
    t_all = time.perf_counter()
    for name, fn in SECTIONS.items():
        if a.only and name not in a.only:
            continue
        t = time.perf_counter()
        (out / name).mkdir(exist_ok=True)
        try:
            fn(device, out / name, a.cpu)
        except Exception as e:  # noqa: BLE001 - one section's failure must not lose the others' figures
            failed += 1
            (out / name / "error.txt").write_text(traceback.format_exc())
            record(name, "FAILED", type(e).__name__, str(e)[:150])
        print(f"[{name}] {time.perf_counter() - t:.0f} s", flush=True)
    (out / "results.json").write_text(json.dumps(RESULTS, indent=1))
    print(f"\n{about}, torch {torch.__version__}, {time.perf_counter() - t_all:.0f} s in all\n")
    print("| section | what | value | note |")
    print("|---|---|---|---|")
    for r in RESULTS:
        print(f"| {r['section']} | {r['what']} | {r['value']} | {r['note']} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
