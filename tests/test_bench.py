"""`mmllm bench --quick` runs end to end and its report is well-formed (no timing asserted)."""

import json
import math
import statistics

import pytest

from mmllm.bench.run import Worker
from mmllm.cli import main
from mmllm.compiled import has_compiler
from tests.conftest import TINY_HF_VIT


def test_bench_quick_report_is_well_formed(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    params = report["comparison"]["parameters"]
    ours = params["mmllm"]
    assert set(params) == {"mmllm", "VisionEncoderDecoderModel", "LlavaForConditionalGeneration"}
    assert all(abs(n - ours) / ours < 0.03 for n in params.values())  # matched size
    for peer in ("ved", "llava"):
        table = report["comparison"]["measurements"][peer]
        for name in ("caption_b1", "caption_b8", "ttft_b1"):
            assert table[name]["ours_s"] > 0 and table[name]["theirs_s"] > 0
            assert math.isfinite(table[name]["ratio_median"])
    assert report["machine"]["matmul_gflops"] > 0 and report["machine"]["bandwidth_gbs"] > 0
    assert report["settings"]["compiled"] is False
    assert report["settings"]["quiet_s"] > 0
    text = capsys.readouterr().out
    assert "VisionEncoderDecoderModel" in text and "| captioning, batch 8 |" in text
    assert "mmllm eager" in text and "ms of quiet" in text
    chip = report["machine"]["processor"] or "unnamed processor"  # the CPU's model name
    assert f"Machine: {chip} (" in text


@pytest.mark.skipif(not has_compiler(), reason="torch.compile on the CPU needs a C++ compiler")
def test_bench_worker_compiles_our_decoding_when_asked():
    worker = Worker("ours", "small", 1, "cpu", None, compile=True)
    try:
        assert worker.info["compiled"]
        assert worker.ask(op="caption", batch=1, new_tokens=3)["seconds"] > 0  # compiles here
        assert worker.ask(op="caption", batch=1, new_tokens=3)["seconds"] > 0
    finally:
        worker.close()


def test_bandwidth_check_sets_each_round_against_its_own_reading():
    """The decode's share of memory bandwidth: each round's decode over the bandwidth read
    beside it (on a shared machine one reading at the start can land in a slow minute)."""
    from mmllm.bench.run import bandwidth_check

    result = bandwidth_check("small", 3, 1, rounds=3)
    readings = result["bandwidth_gbs_rounds"]
    assert len(readings) == 3 and all(gbs > 0 for gbs in readings)
    assert result["fraction_min"] <= result["fraction_of_bandwidth"] <= result["fraction_max"]
    rates = result["decode_tok_s_rounds"]
    assert len(rates) == 3 and result["decode_tok_s"] == statistics.median(rates)
    decoder_gb = result["decoder_mb"] / 1e3
    shares = sorted(decoder_gb * r / gbs for r, gbs in zip(rates, readings, strict=True))
    assert result["fraction_of_bandwidth"] == pytest.approx(shares[1])
    assert (result["fraction_min"], result["fraction_max"]) == pytest.approx((shares[0], shares[2]))


def test_timed_commands_wait_for_quiet(monkeypatch):
    """A timed command is sent only after a pause (the other side's OpenMP threads spin for a
    few milliseconds after its last call, on the cores this one needs); other commands are not
    delayed."""
    import io

    from mmllm.bench import run

    events = []
    monkeypatch.setattr(run.time, "sleep", lambda s: events.append(("sleep", s)))

    class Pipe(io.StringIO):
        def write(self, text):
            events.append(("send", json.loads(text)["op"]))
            return len(text)

    worker = object.__new__(Worker)
    worker.proc = type("Proc", (), {"stdin": Pipe(), "stdout": io.StringIO('{"seconds": 1}\n' * 3)})
    for op in ("caption", "rss", "ttft"):
        worker.ask(op=op)
    quiet = ("sleep", run.QUIET_S)
    assert events == [quiet, ("send", "caption"), ("send", "rss"), quiet, ("send", "ttft")]


TINY_VIT_GPT2 = dict(
    encoder=TINY_HF_VIT,
    decoder=dict(vocab_size=97, n_embd=48, n_layer=2, n_head=4, n_positions=64),
    start=96,
    end=96,
    pad=96,
)
TINY_BLIP = dict(
    encoder=TINY_HF_VIT,
    decoder=dict(
        vocab_size=97,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        encoder_hidden_size=32,
        max_position_embeddings=64,
    ),
    start=95,
    end=3,
    pad=0,
)


@pytest.mark.parametrize("family, sizes", [("vit-gpt2", TINY_VIT_GPT2), ("blip-base", TINY_BLIP)])
def test_same_weights_sides_build_one_model_and_give_the_same_tokens(monkeypatch, family, sizes):
    """Both sides of ``mmllm bench --same-weights`` build the same weights from one seed; ours,
    converted, generates transformers' tokens (a tiny stand-in of the published size)."""
    import torch

    from mmllm.bench import peers
    from mmllm.bench.peers import build, weights_read_per_token

    monkeypatch.setitem(peers.SAME_WEIGHTS, family, sizes)
    theirs, ours = (build(side, f"same:{family}") for side in ("transformers", "mmllm"))
    assert abs(theirs.parameters - ours.parameters) / theirs.parameters < 0.01  # no pooler
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got, want = ours.run(pixels, 12), theirs.run(pixels, 12)
    assert got.shape == (3, 12) and torch.equal(got, want)
    decoder = ours.model.decoder
    every = sum(p.numel() * 4 for p in decoder.parameters())
    cross_kv = sum(
        p.numel() * 4
        for n, p in decoder.named_parameters()
        if ".cross_attn.k_proj." in n or ".cross_attn.v_proj." in n
    )
    positions = decoder.embed_positions.weight.numel() * 4
    assert weights_read_per_token(decoder) == every - cross_kv - positions
    with pytest.raises(ValueError, match="unknown side"):
        build("elsewhere", f"same:{family}")
