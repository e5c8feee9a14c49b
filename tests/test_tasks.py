"""Task registry and the packaged official split files."""

from __future__ import annotations

from collections import Counter
from importlib import resources

import pytest

from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.probing.metrics import KEY_LABELS
from hf_jukebox_mir.probing.mir_datasets import (
    emomusic_official_split,
    giantsteps_official_split,
    gtzan_official_split,
    magnatagatune_official_split,
)
from hf_jukebox_mir.probing.tasks import (
    GTZAN_GENRES,
    MAGNATAGATUNE_TOP50,
    SYNTHETIC_INSTRUMENTS,
    get_task,
    jukemir_average,
    jukemir_task_score,
    list_tasks,
)


def test_registry_lists_all_tasks():
    assert set(list_tasks()) == {
        "gtzan",
        "magnatagatune",
        "giantsteps",
        "emomusic",
        "synthetic_key",
        "synthetic_instruments",
    }


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("gtzan_ff", "gtzan"),
        ("MTT", "magnatagatune"),
        ("giantsteps_clips", "giantsteps"),
        ("emo", "emomusic"),
        (" synthetic_key ", "synthetic_key"),
    ],
)
def test_aliases(name, canonical):
    assert get_task(name).name == canonical
    assert get_task(get_task(name)) is get_task(canonical)


def test_unknown_task_lists_choices():
    with pytest.raises(JukeboxInputError, match="Unknown task 'nsynth'; choose one of emomusic, giantsteps"):
        get_task("nsynth")


@pytest.mark.parametrize(
    "name, problem_type, num_labels, primary, label_column",
    [
        ("gtzan", "single_label_classification", 10, "accuracy", "label"),
        ("magnatagatune", "multi_label_classification", 50, "roc_auc", "labels"),
        ("giantsteps", "single_label_classification", 24, "weighted_score", "label"),
        ("emomusic", "regression", 2, "r2", "labels"),
        ("synthetic_key", "single_label_classification", 24, "weighted_score", "label"),
        ("synthetic_instruments", "multi_label_classification", 5, "roc_auc", "labels"),
    ],
)
def test_task_specs(name, problem_type, num_labels, primary, label_column):
    task = get_task(name)
    assert task.problem_type == problem_type
    assert task.num_labels == num_labels == len(set(task.label_names))
    assert task.primary_metric == primary and task.greater_is_better
    assert task.label_column == label_column
    assert task.layout and task.loader.startswith("load_")
    assert set(task.evaluate_modules) <= {"accuracy", "multilabel", "r2", "mirex_key"}


def test_label_vocabularies():
    assert get_task("gtzan").label_names == GTZAN_GENRES == tuple(sorted(GTZAN_GENRES))
    assert get_task("giantsteps").label_names == KEY_LABELS
    assert get_task("emomusic").label_names == ("arousal", "valence")
    assert get_task("synthetic_instruments").label_names == SYNTHETIC_INSTRUMENTS
    packaged = resources.files("hf_jukebox_mir.probing").joinpath("data", "magnatagatune", "top50_tags.txt").read_text()
    assert tuple(packaged.splitlines()) == MAGNATAGATUNE_TOP50
    assert get_task("giantsteps").song_level and get_task("synthetic_key").song_level
    assert not get_task("gtzan").song_level


def test_packaged_splits_match_expected_sizes():
    gtzan = gtzan_official_split()
    assert (
        {k: len(v) for k, v in gtzan.items()}
        == get_task("gtzan").expected_sizes
        == {"train": 443, "validation": 197, "test": 290}
    )
    assert len({e for v in gtzan.values() for e in v}) == 930
    assert all(e.split("/")[0] in GTZAN_GENRES and e.endswith(".wav") for v in gtzan.values() for e in v)
    assert Counter(e.split("/")[0] for e in gtzan["test"]).most_common()[-1][1] >= 26  # 26-32 per genre

    mtt = magnatagatune_official_split()
    assert {k: len(v) for k, v in mtt.items()} == get_task("magnatagatune").expected_sizes
    assert not {35644, 55753, 57881} & {c for v in mtt.values() for c in v}  # corrupt mp3s dropped

    songs = giantsteps_official_split()
    assert Counter(s["split"] for s in songs) == {"train": 923, "validation": 236, "test": 604}
    clips = Counter()
    for s in songs:
        clips[s["split"]] += s["num_clips_30s"]
    assert dict(clips) == get_task("giantsteps").expected_sizes == {"train": 3687, "validation": 942, "test": 2406}

    emo = emomusic_official_split()
    assert (
        dict(Counter(emo.values()))
        == get_task("emomusic").expected_sizes
        == {"train": 504, "validation": 115, "test": 125}
    )


def test_jukemir_average_reproduces_the_paper():
    # JukeMIR Table 2, Jukebox row (x100): MTT 91.5 / 41.4, GTZAN 79.7, GS 66.7, Emo A 72.1 / V 61.7 -> 69.9
    scores = {
        "magnatagatune": jukemir_task_score("magnatagatune", {"roc_auc": 0.915, "average_precision": 0.414}),
        "gtzan": jukemir_task_score("gtzan", {"accuracy": 0.797}),
        "giantsteps": jukemir_task_score("giantsteps", {"weighted_score": 0.667}),
        "emomusic": jukemir_task_score("emomusic", {"arousal_r2": 0.721, "valence_r2": 0.617}),
    }
    assert scores["magnatagatune"] == pytest.approx(66.45)
    assert round(jukemir_average(scores), 1) == 69.9
    with pytest.raises(JukeboxInputError, match="lack"):
        jukemir_task_score("emomusic", {"r2": 0.5})


def test_chance_levels():
    assert get_task("giantsteps").chance_level["weighted_score"] == pytest.approx(2.0 / 24)
    assert get_task("gtzan").chance_level["accuracy"] == pytest.approx(0.1)
    assert get_task("magnatagatune").chance_level == {"roc_auc": 0.5}
