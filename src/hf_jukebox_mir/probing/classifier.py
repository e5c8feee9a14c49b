"""The reusable result of a probe run: a Jukebox MIR model and the selected probe head in one folder.

Training stays on cached features (fast: the grid never runs the prior). [`save_audio_classifier`] then
joins the selected head (`best_probe/`) with the MIR model it was trained on into a
[`JukeboxMIRForAudioClassification`] folder: the prior blocks up to the probed layer, the head with its
standardisation, the probed layer(s) in `config.json`, the feature extractor with the training windowing
(`max_windows` / `window_hop`), the audio-classification pipeline code and a model card. It loads with
`AutoModelForAudioClassification` (package imported) or `trust_remote_code=True` (no package), and
`pipeline("audio-classification", model=folder, trust_remote_code=True)` classifies audio files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.errors import JukeboxInputError
from .reports import WEIGHTED, ProbeResults

CLASSIFIER_DIR = "model"


def _write_config_entry(folder: Path, key: str, value: Any) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config[key] = value
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".config.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def build_audio_classifier(
    model_dir: str | os.PathLike, probe, layers: list[int], *, layer_weights: list[float] | None = None
):
    """A [`JukeboxMIRForAudioClassification`] from a MIR folder and a trained `JukeboxProbeForSequenceClassification`.

    `layers` are the 1-indexed prior blocks the probe was trained on (one, or several with `layer_weights`).
    Only the blocks up to the deepest one are built and read.
    """
    from ..models.configuration_jukebox_mir import JukeboxMIRConfig
    from ..models.configuration_jukebox_mir_classifier import JukeboxMIRClassifierConfig
    from ..models.modeling_jukebox_mir_classifier import JukeboxMIRForAudioClassification

    mir = JukeboxMIRConfig.from_pretrained(str(model_dir))
    depth = max(1, max(layers))
    if depth > mir.num_hidden_layers:
        raise JukeboxInputError(f"The probe reads block {depth} but {model_dir} keeps {mir.num_hidden_layers} blocks.")
    pc = probe.config
    if pc.input_dim != mir.hidden_size:
        raise JukeboxInputError(
            f"The probe takes {pc.input_dim}-d features but the model's width is {mir.hidden_size}: it was not trained "
            f"on this model's features."
        )
    mir_dict = mir.to_dict()
    for key in (
        "model_type",
        "auto_map",
        "architectures",
        "transformers_version",
        "custom_pipelines",
        "id2label",
        "label2id",
        "problem_type",
    ):
        mir_dict.pop(key, None)
    config = JukeboxMIRClassifierConfig(
        **mir_dict,
        num_hidden_layers=depth,
        probe_layers=list(layers),
        probe_layer_weights=layer_weights,
        probe_hidden_size=pc.hidden_size,
        probe_dropout=pc.dropout,
        probe_standardize=pc.standardize,
        problem_type=pc.problem_type,
        id2label=dict(pc.id2label),
    )
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is missing from the MIR folder by design: no load report
    try:
        model = JukeboxMIRForAudioClassification.from_pretrained(
            str(model_dir), config=config, dtype="float32", new_modules=("head", "layer_weights")
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    model.head.load_state_dict(probe.head.state_dict())
    model.head.standardize = pc.standardize
    if layer_weights is not None:
        with torch.no_grad():
            model.layer_weights.copy_(torch.tensor(layer_weights, dtype=model.layer_weights.dtype))
    return model.eval()


def save_audio_classifier(
    output_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    results: ProbeResults | Mapping[str, Any],
    *,
    max_windows: int | None = None,
    window_hop: int | None = None,
    folder_name: str = CLASSIFIER_DIR,
) -> Path:
    """Write `output_dir/model/`: the MIR model of `model_dir` + the selected probe of a `run_probe_grid` run.

    Returns the folder. `results` is the run's [`ProbeResults`] (or its `results.json` as parsed JSON, read
    strictly by `ProbeResults.from_dict`); the folder keeps it as `probe_results.json` and its card is rendered
    from it (test metrics, dataset coverage, how the numbers were obtained).
    """
    from ..models.feature_extraction_jukebox import JukeboxFeatureExtractor
    from ..models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
    from ..models.pipeline_jukebox_classification import (
        CLASSIFICATION_PIPELINE_ENTRY,
        JukeboxAudioClassificationPipeline,
    )
    from ..probing.training import _quiet_progress_bars

    output_dir = Path(output_dir)
    if not isinstance(results, ProbeResults):
        results = ProbeResults.from_dict(dict(results))
    layer_name = str(results.best.get("layer_name"))
    names = [str(n) for n in results.layers] if layer_name == WEIGHTED else [layer_name]
    if not all(n.isdigit() for n in names):
        raise JukeboxInputError(
            f"The selected probe read layer(s) {names}, not prior block numbers; cannot attach it to the model."
        )
    with _quiet_progress_bars():
        probe = JukeboxProbeForSequenceClassification.from_pretrained(str(output_dir / "best_probe"))
        weights = probe.layer_weights.detach().float().tolist() if probe.layer_weights is not None else None
        model = build_audio_classifier(model_dir, probe, [int(n) for n in names], layer_weights=weights)
        out = output_dir / folder_name
        if out.exists():
            shutil.rmtree(out)
        model.save_pretrained(str(out))
    feature_extractor = JukeboxFeatureExtractor.from_pretrained(str(model_dir))
    if max_windows is not None:
        feature_extractor.max_windows = int(max_windows)
    if window_hop is not None:
        feature_extractor.window_hop = int(window_hop)
    feature_extractor.save_pretrained(str(out))
    _write_config_entry(out, "custom_pipelines", json.loads(json.dumps(CLASSIFICATION_PIPELINE_ENTRY)))
    from transformers.dynamic_module_utils import custom_object_save

    custom_object_save(JukeboxAudioClassificationPipeline, out)
    audit = Path(model_dir) / "conversion_audit.json"
    if audit.is_file():
        shutil.copyfile(audit, out / "conversion_audit.json")
    (out / "probe_results.json").write_text(results.to_json())
    from ..publishing.cards import write_model_card

    write_model_card(out, results_json=results)
    return out


__all__ = ["CLASSIFIER_DIR", "build_audio_classifier", "save_audio_classifier"]
