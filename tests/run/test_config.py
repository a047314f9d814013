"""Every option of every config group composes, and bad values fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from facenet_pl.mining import MINERS, build_miner
from facenet_pl.run.config_checks import ConfigError, check_config, missing_keys

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = [
    "backbone",
    "miner",
    "loss",
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "augment",
]


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg.copy())  # ${hydra:...} resolves as in a run (runtime.cwd: the current dir)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/facenet-pl-test"
    return cfg


def test_required_groups_and_options_exist():
    assert {"inception", "inception_resnet_v2", "resnet18", "resnet50", "mobilenetv3", "small"} <= set(
        _options("backbone")
    )
    assert {"semihard", "hardest", "random", "batch_hard", "batch_all"} <= set(_options("miner"))
    assert {"cpu", "gpu", "ddp"} <= set(_options("trainer"))
    assert {"csv", "wandb", "tensorboard"} <= set(_options("logger"))


def _for_eval(experiment: str) -> bool:
    """eval.py experiments (image_quality, image_size) compose with eval.yaml: tests/run/test_ablations.py."""
    return "experiment_for: eval" in (CONF / "experiment" / f"{experiment}.yaml").read_text()


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g) if not (g == "experiment" and _for_eval(o))]
)
def test_every_option_composes_and_resolves(group, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resolving hydra.run.dir creates the run directory (unique_dir)
    cfg = _fill_required(_compose([f"{group}={option}"]))
    OmegaConf.resolve(cfg)  # every interpolation resolves
    check_config(cfg)


def _fill_required(cfg):
    """The keys an option leaves for the user (``???`` or ``${missing:}``: data.root, model.init_from) set to a
    placeholder, as the user would on the command line."""
    for key in missing_keys(cfg):
        OmegaConf.update(cfg, key, "user-given")
    return cfg


def _experiment_data_pairs():
    """Every (experiment, data) pair, except that an experiment made for one data set (``override /data: X``,
    e.g. ``lfw_cpu``) is paired with that one only."""
    import re

    pairs = []
    for e in (e for e in _options("experiment") if not _for_eval(e)):
        own = re.search(r"override /data: (\w+)", (CONF / "experiment" / f"{e}.yaml").read_text())
        pairs += [(e, d) for d in ([own.group(1)] if own else _options("data"))]
    return pairs


@pytest.mark.parametrize("experiment,data", _experiment_data_pairs())
def test_every_experiment_composes_with_every_data_set(experiment, data, tmp_path, monkeypatch):
    """``experiment=X data=Y`` composes, passes the config checks and builds its data module: an experiment
    may set only keys every data config has (``experiment=paper data=lfw`` once failed on synthetic-only keys).
    ``data=...`` is given after the experiment, as a user types it, so it wins over an experiment's choice."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces").mkdir()
    overrides = [f"experiment={experiment}", f"data={data}"]
    if data != "synthetic":
        overrides.append(f"data.root={tmp_path / 'faces'}")
    if data == "rec":
        (tmp_path / "faces" / "train.rec").write_bytes(b"")  # data=rec checks that its .rec exists when built
    cfg = _fill_required(_compose(overrides))
    OmegaConf.resolve(cfg)
    check_config(cfg)
    dm = instantiate(cfg.data)
    assert type(dm).__name__ == cfg.data._target_.rsplit(".", 1)[1]
    if experiment == "paper":
        assert (dm.p, dm.k) == (45, 40)
        if data == "synthetic":
            assert dm.train_images_per_identity == 40  # max(10, k): 40 distinct images per person


@pytest.mark.parametrize("option", _options("backbone"))
def test_every_backbone_embeds_a_batch_at_its_input_size(option):
    """Each backbone config builds (random weights) and maps 2 images of its input size to 2 unit vectors of
    model.embedding_dim: catches a projection head sized from the wrong feature width."""
    import torch

    from facenet_pl.models.embedding import FaceNetEmbedding

    cfg = _compose([f"backbone={option}"])
    b = cfg.backbone
    net = FaceNetEmbedding(
        b.name,
        embedding_dim=cfg.model.embedding_dim,
        pretrained=False,
        backbone_kwargs=OmegaConf.to_container(b.kwargs),
    ).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, b.input_size, b.input_size))
    assert out.shape == (2, cfg.model.embedding_dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("option", _options("miner"))
def test_every_miner_instantiates(option):
    cfg = _compose([f"miner={option}"])
    miner = build_miner(cfg.miner)
    if option == "none":  # classification losses: no miner
        assert miner is None
    else:
        assert isinstance(miner, MINERS[option])


def test_loggers_instantiate_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for option in _options("logger"):
        cfg = _compose([f"logger={option}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        for lg in (cfg.logger or {}).values():
            assert instantiate(lg) is not None


@pytest.mark.parametrize(
    "override,match",
    [
        ("loss.margin=-0.1", "loss.margin"),
        ("data.k=1", "data.k"),
        ("data.p=0", "data.p"),
        ("model.embedding_dim=0", "model.embedding_dim"),
        ("backbone.input_size=8", "backbone.input_size"),
        ("+mining.cross_rank=true", "miner.cross_rank"),  # the old key would otherwise be ignored silently
    ],
)
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        check_config(_compose([override]))


def test_readme_config_table_lists_every_option():
    """README's config-group table names every option file under conf/<group>/ (and no missing one)."""
    import re

    from ..helpers import ROOT

    table = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \|", line)
        if m:
            table[m.group(1)] = set(re.findall(r"`([\w/]+)`", m.group(2)))
    for group in sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name not in ("hydra", "paths")):
        options = {p.stem for p in group.glob("*.yaml")}
        assert group.name in table, f"README's config table has no row for {group.name}"
        assert options <= table[group.name], f"{group.name}: {sorted(options - table[group.name])} not in README"


@pytest.mark.parametrize("option", ["default", "fdr", "overfit", "limit", "profiler"])
def test_debug_configs_compose(option):
    from ..helpers import compose_in_process

    cfg = compose_in_process("train", "/unused", [f"debug={option}"])
    assert cfg.task_name == "debug" and cfg.logger is None and cfg.trainer.detect_anomaly
    expected = {
        "fdr": ("fast_dev_run", True),
        "overfit": ("overfit_batches", 3),
        "limit": ("limit_train_batches", 5),
        "profiler": ("profiler", "simple"),
        "default": ("max_epochs", 1),
    }[option]
    assert cfg.trainer[expected[0]] == expected[1]


def test_debug_fdr_runs_one_step_and_prints_the_config_tree(tmp_path, capsys):
    from ..helpers import train_in_process

    metrics = train_in_process(tmp_path, "debug=fdr")
    assert metrics["global_step"] == 1 and not (tmp_path / "checkpoints").exists()
    tree = (tmp_path / "config_tree.txt").read_text()
    assert tree.startswith("CONFIG") and "├── data" in tree and "train_identities: 24" in tree
    assert "├── miner" in tree and tree in capsys.readouterr().out


def test_data_and_cache_locations_are_one_setting_each(tmp_path, monkeypatch):
    """``data=lfw`` reads ``<paths.data_dir>/lfw`` and caches under ``paths.cache_dir``: absolute paths taken from
    where the run started, or from FACENET_PL_DATA_DIR / FACENET_PL_CACHE_DIR, or from a ``paths.*`` override."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACENET_PL_DATA_DIR", raising=False)
    monkeypatch.delenv("FACENET_PL_CACHE_DIR", raising=False)
    cfg = _compose(["data=lfw"])
    OmegaConf.resolve(cfg)
    assert cfg.data.root == str(tmp_path / "data" / "lfw")
    assert cfg.data.cache_dir == str(tmp_path / ".cache" / "facenet_pl")
    monkeypatch.setenv("FACENET_PL_DATA_DIR", "/datasets")
    monkeypatch.setenv("FACENET_PL_CACHE_DIR", "/scratch/cache")
    cfg = _compose(["data=folder", "data.root=${paths.data_dir}/casia"])
    OmegaConf.resolve(cfg)
    assert (cfg.data.root, cfg.data.cache_dir) == ("/datasets/casia", "/scratch/cache")
    cfg = _compose(["data=lfw", "paths.data_dir=/mnt/faces"])
    OmegaConf.resolve(cfg)
    assert cfg.data.root == "/mnt/faces/lfw"
