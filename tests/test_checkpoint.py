"""Checkpoint round trip, atomic save, strict loading, and config (de)serialisation."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmllm import CheckpointError, ConfigError, MMConfig, Tokenizer
from mmllm.weights.checkpoint import load_model, save_checkpoint
from tests.conftest import open_gates


@pytest.fixture
def saved(tmp_path, model):
    open_gates(model)
    tokenizer = Tokenizer.train(["a red circle", "three high beeps"], vocab_size=300)
    return save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer, card="# card\n")


def test_round_trip_gives_identical_config_and_logits(saved, model, media, token_ids):
    loaded = load_model(saved).eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(token_ids, media), model(token_ids, media))


def test_checkpoint_folder_holds_the_documented_files(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    assert json.loads((saved / "config.json").read_text())["format_version"] == 1


def test_save_over_existing_checkpoint_replaces_it_and_leaves_no_temp_files(saved, model):
    (saved / "stale.txt").write_text("old")
    save_checkpoint(model, saved)
    assert not (saved / "stale.txt").exists()
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]


def test_missing_tensor_is_named_in_the_error(saved):
    state = load_file(saved / "model.safetensors")
    del state["decoder.norm.weight"]
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing: decoder\.norm\.weight"):
        load_model(saved)


def test_misshaped_tensor_is_named_in_the_error(saved):
    state = load_file(saved / "model.safetensors")
    state["decoder.norm.weight"] = torch.ones(7)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"mis-shaped: decoder\.norm\.weight"):
        load_model(saved)


def test_unexpected_tensor_is_named_in_the_error(saved):
    state = load_file(saved / "model.safetensors")
    state["extra.weight"] = torch.ones(2)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 unexpected: extra\.weight"):
        load_model(saved)


def test_not_a_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_model(tmp_path)


def test_config_json_round_trip(tmp_path, config):
    config.save(tmp_path / "c.json")
    assert MMConfig.load(tmp_path / "c.json") == config


def test_config_rejects_unknown_keys(config):
    data = config.to_dict()
    data["decoder"]["n_layerz"] = 3
    with pytest.raises(ConfigError, match=r"decoder: unknown keys \['n_layerz'\]"):
        MMConfig.from_dict(data)


def test_config_rejects_a_newer_format(config):
    data = config.to_dict()
    data["format_version"] = 99
    with pytest.raises(ConfigError, match="newer"):
        MMConfig.from_dict(data)
