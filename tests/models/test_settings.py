"""``model.*`` has one source of defaults (facenet_pl/utils/settings.py): the composed config, a model built from a
file that stored fewer keys, and the YAML agree, and Hydra refuses a wrong type as it composes."""

from __future__ import annotations

import dataclasses

import yaml
from omegaconf import OmegaConf

from facenet_pl.utils.settings import ModelSettings

from ..helpers import ROOT, run_train, tiny_module
from ..run.test_config import _compose


def test_the_composed_model_config_is_the_settings_defaults():
    """``python train.py`` with nothing said about ``model.*``: every key, each at the dataclass's default."""
    composed = OmegaConf.to_container(_compose([]).model, resolve=True)
    assert composed == dataclasses.asdict(ModelSettings())


def test_model_yaml_files_write_no_default_of_their_own():
    """conf/model/*.yaml extend the schema and repeat none of its values (a second source would drift, as
    channels_last once did: true in the YAML, false in the module's fallback)."""
    fields = {f.name for f in dataclasses.fields(ModelSettings)}
    for path in (ROOT / "conf" / "model").glob("*.yaml"):
        keys = set(yaml.safe_load(path.read_text()) or {}) - {"defaults"}
        assert not keys & fields, f"{path.name} sets {sorted(keys & fields)}: write defaults in ModelSettings"


def test_a_model_file_with_fewer_keys_takes_the_defaults():
    """An imported published model or an earlier checkpoint stores only some ``model`` keys: the module fills the
    rest from the settings, as a composed config would have them (channels_last true: the old fallback said
    false), and saves the full set with the model."""
    m = tiny_module(model={"embedding_dim": 8, "head": "linear"})
    assert m.channels_last is True and m.eval_flip is False and m.normalization == "fixed"
    assert m.hparams["model"] == {**dataclasses.asdict(ModelSettings()), "embedding_dim": 8}


def test_a_wrong_type_is_refused_as_the_config_composes(tmp_path):
    res = run_train(tmp_path, "model.embedding_dim=abc")
    assert res.returncode == 1
    assert "model.embedding_dim" in res.stderr and "could not be converted to Integer" in res.stderr, res.stderr
    assert not (tmp_path / "checkpoints").exists()
