"""The cache of converted base models (``encoders.disk_cache``) and what fills it."""

import json
import multiprocessing

import pytest
import torch

from encoders import disk_cache
from mmllm.cli import main
from mmllm.weights.pretrained_lm import HFLanguageModel, read_converted_lm, write_lm


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(disk_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_environment_moves_the_cache_else_the_platform_folder(cache, monkeypatch):
    assert disk_cache.cache_root() == cache
    monkeypatch.delenv(disk_cache.CACHE_ENV)
    assert disk_cache.cache_root().name == "mmllm"


def test_an_entry_is_built_once_then_read(cache):
    calls = []

    def build(path):
        calls.append(path)
        path.write_text("made")

    first = disk_cache.cached("thing.txt", build)
    assert disk_cache.cached("thing.txt", build) == first == cache / "thing.txt"
    assert len(calls) == 1 and first.read_text() == "made"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no work left behind


def test_a_failed_build_leaves_no_entry(cache):
    def build(path):
        path.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        disk_cache.cached("thing.txt", build)
    assert list(cache.iterdir()) == []


def _fill(root: str, name: str, barrier) -> str:
    import os
    import time

    os.environ[disk_cache.CACHE_ENV] = root

    def build(path):
        path.mkdir()
        barrier.wait()  # both processes build at once
        for i in range(20):
            (path / f"part{i}").write_text(str(os.getpid()))
            time.sleep(0.001)

    folder = disk_cache.cached(name, build)
    return "".join(sorted({(folder / f"part{i}").read_text() for i in range(20)}))


def test_two_processes_filling_one_entry_both_see_a_whole_one(cache):
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(2)
    with context.Pool(2) as pool:
        results = pool.starmap(_fill, [(str(cache), "model", barrier)] * 2)
    assert results[0] == results[1]  # one writer's whole folder, seen by both
    assert len(list((cache / "model").iterdir())) == 20


def test_file_digests_follow_the_content(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"y")
    first = disk_cache.file_digest(a, b)
    assert disk_cache.file_digest(a, b) == first  # remembered
    assert disk_cache.file_digest(b, a) != first
    a.write_bytes(b"z" * 3_000_000)
    assert disk_cache.file_digest(a, b) != first


def test_a_converted_lm_reads_back_with_its_tied_tensors(tmp_path):
    embed = torch.randn(10, 4)
    state = {"model.embed_tokens.weight": embed, "lm_head.weight": embed, "norm": torch.ones(4)}
    config = {"model_type": "llama", "hidden_size": 4, "rope_scaling": None}
    write_lm(HFLanguageModel(config, state, "x.gguf"), tmp_path / "lm.safetensors")
    lm = read_converted_lm(tmp_path / "lm.safetensors", "x.gguf")
    assert lm.config == config and lm.source == "x.gguf"
    assert set(lm.state) == set(state)
    assert torch.equal(lm.state["lm_head.weight"], embed)


def test_cache_info_and_clear(cache, capsys):
    disk_cache.cached("lm-1.safetensors", lambda p: p.write_bytes(b"0" * 2048))
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["folder"] == str(cache)
    assert info["entries"] == [{"name": "lm-1.safetensors", "bytes": 2048}]
    assert main(["cache", "clear"]) == 0
    assert "2048" not in capsys.readouterr().out
    assert disk_cache.entries() == []
    assert main(["cache", "info"]) == 0
    assert "0 entries" in capsys.readouterr().out
