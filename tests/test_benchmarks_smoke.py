"""Smoke tests of the benchmark scripts in ``benchmarks/`` at tiny scale (subprocesses, a few seconds).

The comparison against the old transformers port needs its own virtual environment
(``benchmarks/port_env.py``); those tests are marked slow and skip when it does not exist.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PORT_PYTHON = BENCH / ".venv-port" / "bin" / "python"
TINY_PRIOR = [
    "--width",
    "64",
    "--depth",
    "3",
    "--heads",
    "2",
    "--n-ctx",
    "256",
    "--blocks",
    "4",
    "--layer",
    "2",
    "--repeats",
    "1",
    "--warmup",
    "1",
    "--threads",
    "1",
]


def _run(args: list[str], python: str = sys.executable, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [python, *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_bench_gpu_tiny_on_cpu(tmp_path):
    out_json = tmp_path / "gpu.json"
    results = tmp_path / "results.jsonl"
    proc = _run(
        [
            str(BENCH / "bench_gpu.py"),
            "--device",
            "cpu",
            "--tiny",
            "--threads",
            "1",
            "--json-out",
            str(out_json),
            "--results",
            str(results),
            "--workdir",
            str(tmp_path),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the table: header and one row per batch size (1 and 2)
    assert "| batch | ms / window | achieved | of matmul rate | peak RSS memory |" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2
    result = json.loads(out_json.read_text())
    assert result["benchmark"] == "bench_gpu" and result["tiny"] is True and result["dtype"] == "float32"
    # 3 of 6 saved layers were loaded from the safetensors folder, and only those count in the FLOPs
    assert result["save"]["layers_saved"] == 6 and result["layers_loaded"] == 3
    assert result["save"]["checkpoint_mb"] > 0 and result["load_s"] > 0
    assert result["flops_per_window"] == 2 * result["block_params"] * 256
    # each block of the tiny prior: qkv 64x48 (+48), out 16x64 (+64), MLP 2 x 64x64 (+64 each), 2 LayerNorms
    assert result["params_per_block"] == pytest.approx(64 * 48 + 48 + 16 * 64 + 64 + 2 * (64 * 64 + 64) + 4 * 64)
    assert result["matmul_tflops_reference"] > 0
    assert [row["batch"] for row in result["batches"]] == [1, 2]
    for row in result["batches"]:
        assert "error" not in row, row
        assert row["output_shape"] == [row["batch"], 256, 64] and row["finite"]
        assert row["ms_per_window"] > 0 and row["tflops"] > 0 and row["peak_memory_mb"] > 0
    # one JSON line appended, identical in content to --json-out
    lines = results.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["flops_per_window"] == result["flops_per_window"]


def _bench_module(name: str):
    """A module of benchmarks/ (they import each other by plain name)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_ours_runner_tiny_forward_served():
    # the --serve protocol of bench_cpu.py --paired, with one side: ready, 2 driven calls, final record
    run_paired = _bench_module("_common").run_paired
    argv = [sys.executable, str(BENCH / "ours_runner.py"), "--measure", "prior_forward", *TINY_PRIOR]
    records, pairs = run_paired({"ours": argv}, calls=2, timeout=120)
    record = records["ours"]
    assert "error" not in record, record
    assert len(pairs) == 2 and all(pair["ours"] > 0 for pair in pairs)
    assert record["times_s"] == [pair["ours"] for pair in pairs]  # the driven calls are the timed ones
    assert record["side"] == "ours" and record["measure"] == "prior_forward" and record["serve"] is True
    assert record["threads"] == 1 and record["dtype"] == "float32"
    assert record["config"]["width"] == 64 and record["config"]["n_ctx"] == 256
    assert record["median_s"] > 0 and len(record["cpu_times_s"]) == 2
    assert record["peak_rss_mb"] >= record["rss_imports_mb"] > 0
    assert record["layers_run"] == 3
    assert record["output"]["logits"] == [1, 256, 2048]
    assert record["output"]["hidden_states"] == [4, 1, 256, 64]  # embeddings + 3 blocks
    assert record["output"]["finite"] is True


def test_bench_cpu_table_ours_only(tmp_path):
    results = tmp_path / "results.jsonl"
    proc = _run(
        [
            str(BENCH / "bench_cpu.py"),
            "--preset",
            "tiny",
            "--sides",
            "ours",
            "--measures",
            "prior_layer",
            "--threads",
            "1",
            "--results",
            str(results),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| measure | ours median (best) | port median (best) | speed-up (median) | speed-up (best) |" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| prior_layer |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "not run" and cells[3] == cells[4] == "-"  # no port side, no ratios
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["benchmark"] == "bench_cpu" and record["preset"] == "tiny" and record["threads"] == 1
    assert set(record["machine"]) >= {"cpu", "cpu_count", "platform"}
    ours = record["results"]["prior_layer"]["ours"]
    assert ours["measure"] == "prior_layer" and ours["side"] == "ours"
    assert ours["layers_run"] == 2  # built with only the layers needed for layer 2
    assert ours["output"]["layer_activations"] == [1, 256, 64] and ours["output"]["finite"] is True
    assert ours["config"]["truncate"] == "build" and len(ours["times_s"]) == 1
    assert record["results"]["prior_layer"]["compare"]["speedup"] is None


def test_bench_cpu_rejects_unknown_measure():
    proc = _run(
        [str(BENCH / "bench_cpu.py"), "--preset", "tiny", "--sides", "ours", "--measures", "nope", "--no-record"]
    )
    assert proc.returncode == 2 and "unknown measure 'nope'" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not PORT_PYTHON.exists(), reason="port environment missing: python benchmarks/port_env.py")
def test_bench_cpu_tiny_against_port(tmp_path):
    results = tmp_path / "results.jsonl"
    proc = _run([str(BENCH / "bench_cpu.py"), "--preset", "tiny", "--results", str(results)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(results.read_text().splitlines()[-1])
    for measure in ("prior_forward", "prior_layer", "vqvae_encode"):
        row = record["results"][measure]
        assert row["ours"]["side"] == "ours" and row["port"]["side"] == "port"
        assert row["compare"]["speedup"] > 0
    fwd = record["results"]["prior_forward"]
    # both sides return logits and one hidden state per block (ours also the embeddings)
    assert fwd["ours"]["output"]["logits"] == fwd["port"]["output"]["logits"] == [1, 256, 2048]
    assert fwd["port"]["output"]["hidden_states"] == [3, 1, 256, 64]
    enc = record["results"]["vqvae_encode"]
    assert enc["ours"]["output"]["top_codes"] == enc["port"]["output"]["top_codes"]


def test_live_tensor_tracker_counts_peak_and_frees():
    plan = _bench_module("_memory_plan")
    weight = torch.nn.Linear(256, 256, bias=False)

    def forward():
        x = torch.ones(1000)  # 4000 B
        y = x + 1  # 8000 B alive
        del x  # freed before the next op
        z = y * 2  # y and z: 8000 B
        view = z[:10]  # a view allocates nothing, and keeps z's storage alive
        del y, z  # 4000 B
        return weight(torch.zeros(1, 256)).sum() + view.sum()  # + 2 x 1024 B + scalars; weights not counted

    peak, _ = plan.plan_forward_peak(forward, weight)
    assert peak == 8000
    assert plan.module_bytes(weight) == 256 * 256 * 4


def test_memory_plan_on_meta_equals_the_same_run_on_cpu():
    plan = _bench_module("_memory_plan")
    from hf_jukebox_mir import JukeboxPrior, JukeboxPriorConfig

    config = JukeboxPriorConfig.from_preset(
        "prior_5b", hidden_size=64, num_hidden_layers=3, num_attention_heads=2, n_ctx=256, blocks=4
    )
    peaks = {}
    for device in ("cpu", "meta"):
        with torch.device(device):
            model = JukeboxPrior(config).eval()
        codes = torch.zeros(2, 256, dtype=torch.long, device=device)
        metadata = model.build_metadata().to(device).expand(2, -1)

        def forward(model=model, codes=codes, metadata=metadata):
            with torch.inference_mode():  # the prior's lean inference path (what JukeboxMIRModel runs)
                return model.forward_features(codes, metadata=metadata)

        peaks[device], out = plan.plan_forward_peak(forward, model)
        assert out.shape == (2, 256, 64)
    assert peaks["meta"] == peaks["cpu"]
    one_activation = 2 * 256 * 64 * 4
    # the blocks keep a handful of activations alive at once, never one per layer
    assert one_activation * 3 <= peaks["cpu"] <= one_activation * 6


def test_bench_gpu_plan_memory_tiny(tmp_path):
    out_json = tmp_path / "plan.json"
    proc = _run(
        [
            str(BENCH / "bench_gpu.py"),
            "--plan-memory",
            "--tiny",
            "--batches",
            "1,2",
            "--no-record",
            "--json-out",
            str(out_json),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| batch | prior: peak activations | prior: weights + activations | <= 6 GB |" in proc.stdout
    whole = json.loads(out_json.read_text())["plan"]["end_to_end"]
    assert [row["batch"] for row in whole] == [1, 2] and whole[0]["total_mb"] < whole[1]["total_mb"]
    plan = json.loads(out_json.read_text())["plan"]
    one, two = plan["batches"]
    assert one["output_shape"] == [1, 256, 64] and two["output_shape"] == [2, 256, 64]
    # activations grow with the batch (a bit more than 2x here: at batch 1 the column pattern needs no copy)
    assert 1.5 * one["activations_peak_mb"] <= two["activations_peak_mb"] <= 2.5 * one["activations_peak_mb"]
    assert one["total_mb"] == pytest.approx(plan["weights_mb"] + one["activations_peak_mb"])


def test_bench_real_size_pairs_take_medians_and_prepare_the_cache(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        bench = importlib.import_module("bench_real_size")
    finally:
        sys.path.remove(str(BENCH))
    runs = [{"seconds": 3.0, "rc": 0}, {"seconds": 1.0, "rc": 0}, {"seconds": 2.0, "rc": 1}]
    chosen = bench.median_run(runs)
    assert chosen["seconds"] == 2.0 and chosen["rc"] == 1 and chosen["runs_seconds"] == [3.0, 1.0, 2.0]
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(1 << 20))
    for cache in ("cold", "warm"):
        bench.prepare_cache([source], cache)
    target = tmp_path / "copy.bin"
    result = bench.copy_step([source], 3 << 20, target, rss_limit_gb=2.0)
    assert result["rc"] == 0 and result["bytes_read"] == 1 << 20 and result["bytes_written"] == 3 << 20
    assert not target.exists()  # the copy's output is removed after timing
