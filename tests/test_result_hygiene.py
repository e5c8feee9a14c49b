"""Result hygiene (issue 18): an incomplete benchmark copy is flagged in results.json, results.md and the card;
results record versions, threads and seeds, and are one `ProbeResults` dataclass written and read by the same
code."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from hf_jukebox_mir.cli import main
from hf_jukebox_mir.probing.mir_datasets import gtzan_official_split
from hf_jukebox_mir.probing.reports import ProbeResults


def _partial_gtzan(root, per_split: int = 6):
    rng = np.random.default_rng(0)
    base = root / "genres"
    for entries in gtzan_official_split().values():
        for entry in entries[:per_split]:
            genre, name = entry.split("/")
            path = base / genre / f"{name.rsplit('.', 1)[0]}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.2 * rng.standard_normal(11025)).astype(np.float32), 22050)
    return root


def test_incomplete_split_is_flagged_in_results_report_and_card(tmp_path, capsys):
    data = _partial_gtzan(tmp_path / "gtzan")
    out = tmp_path / "run"
    assert (
        main(
            [
                "probe",
                "--task",
                "gtzan",
                "--data",
                str(data),
                "--allow-missing",
                "--max-epochs",
                "2",
                "--output",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert (
        "WARNING: incomplete dataset (found/expected: train 6/443, validation 6/197, test 6/290)"
        in capsys.readouterr().out
    )
    results = ProbeResults.read(out / "results.json")
    assert results.complete is False
    assert results.coverage["splits"]["train"] == {"found": 6, "expected": 443}
    assert results.environment["torch_threads"] == 1 and results.environment["versions"]["transformers"]
    assert results.seeds["seeds"] == [0]
    assert ProbeResults.from_dict(json.loads((out / "results.json").read_text())).to_dict() == results.to_dict()
    report = (out / "results.md").read_text()
    assert report.startswith("# Probe results (INCOMPLETE dataset)")
    assert "train 6/443, validation 6/197, test 6/290" in report
    assert main(["card", str(out / "best_probe"), "--results", str(out / "results.json")]) == 0
    card = (out / "best_probe" / "README.md").read_text()
    assert "# Jukebox probe: gtzan (INCOMPLETE dataset)" in card
    assert "INCOMPLETE dataset: gtzan files found/expected train 6/443, validation 6/197, test 6/290" in card
    assert (
        "- gtzan: dataset coverage (files found / expected) train 6/443, validation 6/197, test 6/290 - "
        "INCOMPLETE" in card
    )
    assert "- gtzan: selected configuration over 1 seed(s) [0]" in card and "torch threads 1" in card
