"""`mmllm bench --quick` runs end to end and its report is well-formed (no timing asserted)."""

import json
import math
import statistics

import pytest

from mmllm.bench.run import Worker
from mmllm.cli import main
from mmllm.compiled import has_compiler


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
