"""Smoke tests of ``benchmarks/bench_sampling_vs_original.py`` (sampling speed, ours vs the original code).

Our side runs in this environment on the fixture-size checkpoints (a few seconds). The original side needs
its own virtual environment (``python benchmarks/orig_env.py``: PyPI ``jukebox-infer``); that test is marked
slow and skips when the environment does not exist.
"""

from __future__ import annotations

import json
import sys

import pytest

from test_benchmarks_smoke import BENCH, _bench_module, _run

ORIG_PYTHON = BENCH / ".venv-orig" / "bin" / "python"
TINY = ["--tokens", "8", "--prime", "8", "--warmup", "1", "--threads", "1"]


def test_ours_sampling_runner_served_on_the_fixture():
    # the paired protocol of the benchmark with one side: ready, 2 driven calls, then the final record
    run_paired = _bench_module("_common").run_paired
    argv = [sys.executable, str(BENCH / "ours_sampling_runner.py"), "--prior", "upsampler", "--batch", "2", *TINY]
    records, pairs = run_paired({"ours": argv}, calls=2, timeout=180)
    record = records["ours"]
    assert "error" not in record, record
    assert len(pairs) == 2 and record["times_s"] == [pair["ours"] for pair in pairs]
    assert record["side"] == "ours" and record["measure"] == "sample" and record["threads"] == 1
    config = record["config"]
    assert config["level"] == 0 and config["n_ctx"] == 256 and config["batch"] == 2
    assert config["prime"] == 8 and config["tokens"] == 8 and config["checkpoint"].endswith("prior_level_0.pth.tar")
    assert record["output"]["codes"] == [2, 8]  # the new codes only
    assert record["tokens_per_s"] == pytest.approx(2 * 8 / record["median_s"])
    assert len(record["codes_sha256"]) == 64 and record["params_total"] > 0


def test_bench_sampling_vs_original_ours_only(tmp_path):
    results = tmp_path / "results.jsonl"
    proc = _run(
        [
            str(BENCH / "bench_sampling_vs_original.py"),
            "--sides",
            "ours",
            "--priors",
            "top",
            "--batches",
            "1",
            "--repeats",
            "1",
            *TINY,
            "--results",
            str(results),
        ],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header = "| prior | batch | new tokens | ours eager tok/s (wall / CPU) | ours compiled tok/s (wall / CPU) |"
    assert header in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| top | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    wall, cpu = (float(v) for v in cells[3].split(" / "))
    assert cells[2] == "8" and wall > 0 and cpu > 0
    compiled = _bench_module("ours_sampling_runner").compile_supported()
    assert (cells[4] != "not available") if compiled else (cells[4] == "not available")
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["benchmark"] == "sampling_vs_original" and record["threads"] == 1
    assert record["cross_check"] == []  # needs both sides
    assert record["rows"][0]["sides"]["ours"]["config"]["tokens"] == 8


@pytest.mark.slow
@pytest.mark.skipif(not ORIG_PYTHON.exists(), reason="original-code environment missing: python benchmarks/orig_env.py")
def test_bench_sampling_vs_original_tiny_against_the_original(tmp_path):
    results = tmp_path / "results.jsonl"
    proc = _run(
        [
            str(BENCH / "bench_sampling_vs_original.py"),
            "--batches",
            "2",
            "--repeats",
            "2",
            *TINY,
            "--check-tokens",
            "16",
            "--check-prime",
            "16",
            "--results",
            str(results),
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(results.read_text().splitlines()[-1])
    assert [(c["prior"], c["case"]) for c in record["cross_check"]] == [
        ("top", "ancestral"),
        ("top", "primed"),
        ("upsampler", "ancestral"),
        ("upsampler", "primed"),
    ]
    assert all(c["equal"] is True for c in record["cross_check"]), record["cross_check"]
    for row in record["rows"]:
        orig, ours = row["sides"]["orig"], row["sides"]["ours"]
        assert orig["side"] == "orig" and "jukebox-infer" in orig["impl"]
        assert orig["config"] == ours["config"]  # the same checkpoint, inputs and settings
        assert orig["output"]["codes"] == ours["output"]["codes"] == [2, 8]
        assert row["ours_over_orig"] > 0 and row["ours_over_orig_cpu"] > 0
        assert isinstance(row["ours_same_codes_as_orig"], bool)
