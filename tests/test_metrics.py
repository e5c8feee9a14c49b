"""Metric functions against hand-computed values, scikit-learn and mir_eval; the `evaluate` modules offline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, r2_score, roc_auc_score
from transformers import EvalPrediction

from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.probing.metrics import (
    AGGREGATION_STRATEGIES,
    KEY_LABELS,
    MirexKeyMetric,
    accuracy,
    aggregate_clip_logits,
    best_aggregation,
    compute_task_metrics,
    key_relation,
    key_scores,
    key_to_index,
    load_metric,
    make_compute_metrics,
    metric_path,
    mirex_key_score,
    multilabel_scores,
    r2_scores,
    song_key_scores,
)

# ------------------------------------------------------------------------------------------------ keys


def test_key_labels_follow_jukemir_order():
    assert len(KEY_LABELS) == 24
    assert KEY_LABELS[0] == "C major" and KEY_LABELS[11] == "B major"
    assert KEY_LABELS[12] == "C minor" and KEY_LABELS[15] == "Eb minor"


@pytest.mark.parametrize(
    "text, index",
    [
        ("C major", 0),
        ("Eb minor", 15),
        ("D# minor", 15),
        ("d# minor", 15),
        ("F#:major", 6),
        ("Gb major", 6),
        ("A minor", 21),
        ("Bb\tmajor", 10),
        (23, 23),
    ],
)
def test_key_to_index(text, index):
    assert key_to_index(text) == index


@pytest.mark.parametrize("bad", ["H major", "C dorian", "C", 24, -1, None, "C major minor"])
def test_key_to_index_rejects(bad):
    with pytest.raises(JukeboxInputError, match="key"):
        key_to_index(bad)


def test_weighted_score_hand_values():
    assert mirex_key_score("C major", "C major") == 1.0
    assert mirex_key_score("C major", "G major") == 0.5  # fifth above
    assert mirex_key_score("C major", "F major") == 0.0  # fifth below: not credited by default
    assert mirex_key_score("C major", "F major", allow_descending_fifths=True) == 0.5
    assert mirex_key_score("C major", "A minor") == 0.3  # relative minor
    assert mirex_key_score("A minor", "C major") == 0.3  # relative major
    assert mirex_key_score("C major", "C minor") == 0.2  # parallel
    assert mirex_key_score("A minor", "E minor") == 0.5
    assert mirex_key_score("C major", "E minor") == 0.0
    assert key_relation("D# minor", "Bb minor") == "fifth"


def test_weighted_score_matches_mir_eval_on_all_pairs():
    mir_eval = pytest.importorskip("mir_eval")
    for ref in KEY_LABELS:
        for est in KEY_LABELS:
            assert mirex_key_score(ref, est) == pytest.approx(mir_eval.key.weighted_score(ref, est)), (ref, est)


def test_key_scores_mean_and_fractions():
    refs = ["C major", "C major", "C major", "C major", "C major"]
    ests = ["C major", "G major", "A minor", "C minor", "F# major"]
    result = key_scores(refs, ests)
    assert result["weighted_score"] == pytest.approx((1.0 + 0.5 + 0.3 + 0.2 + 0.0) / 5)
    assert result["accuracy"] == pytest.approx(0.2)
    assert [result[k] for k in ("correct", "fifth", "relative", "parallel", "other")] == [0.2] * 5
    # ids and names give the same numbers
    assert key_scores([key_to_index(r) for r in refs], [key_to_index(e) for e in ests]) == result


def test_key_scores_errors():
    with pytest.raises(JukeboxInputError, match="same number of examples"):
        key_scores(["C major"], ["C major", "D major"])
    with pytest.raises(JukeboxInputError, match="empty"):
        key_scores([], [])
    with pytest.raises(JukeboxInputError, match="not a single string"):
        key_scores("C major", "C major")


# ------------------------------------------------------------------------------------------------ accuracy


def test_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 10, 200), rng.integers(0, 10, 200)
    assert accuracy(refs, preds)["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == {"accuracy": 0.75}


def test_accuracy_validates():
    with pytest.raises(JukeboxInputError, match="same number of examples, got 3 and 2"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(JukeboxInputError, match="take argmax of logits first"):
        accuracy([0, 1], [[0.1, 0.9], [0.8, 0.2]])
    with pytest.raises(JukeboxInputError, match="integer class ids"):
        accuracy([0, 1], [0.5, 1.0])
    with pytest.raises(JukeboxInputError, match="empty"):
        accuracy([], [])


# ------------------------------------------------------------------------------------------------ multi-label


def test_multilabel_matches_sklearn():
    rng = np.random.default_rng(1)
    refs = rng.integers(0, 2, (60, 7))
    scores = rng.random((60, 7)) + 0.5 * refs
    result = multilabel_scores(refs, scores)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(refs, scores, average="macro"))
    assert result["average_precision"] == pytest.approx(average_precision_score(refs, scores, average="macro"))
    assert result["num_labels_scored"] == 7


def test_multilabel_hand_values():
    refs = [[1, 0], [0, 1], [1, 0], [0, 1]]
    scores = [[0.9, 0.3], [0.2, 0.8], [0.4, 0.1], [0.6, 0.7]]
    # label 0: positives 0.9, 0.4 vs negatives 0.2, 0.6 -> 3 of 4 pairs ranked right; label 1: perfect
    result = multilabel_scores(refs, scores)
    assert result["roc_auc"] == pytest.approx((0.75 + 1.0) / 2)
    # label 0 AP: ranking 0.9(+), 0.6(-), 0.4(+) -> (1 + 2/3) / 2; label 1: 1
    assert result["average_precision"] == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)


def test_multilabel_constant_labels():
    refs = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.3, 0.5], [0.8, 0.2, 0.9]])
    with pytest.raises(JukeboxInputError, match=r"undefined for labels \[1, 2\]"):
        multilabel_scores(refs, scores)
    result = multilabel_scores(refs, scores, skip_constant_labels=True)
    assert result["num_labels_scored"] == 1 and result["roc_auc"] == 1.0


def test_multilabel_validates():
    with pytest.raises(JukeboxInputError, match="shape"):
        multilabel_scores([[1, 0]], [[0.5, 0.5, 0.5]])
    with pytest.raises(JukeboxInputError, match="multi-hot"):
        multilabel_scores([[2, 0], [0, 1]], [[0.5, 0.5], [0.1, 0.2]])
    with pytest.raises(JukeboxInputError, match="NaN"):
        multilabel_scores([[1, 0], [0, 1]], [[np.nan, 0.5], [0.1, 0.2]])


# ------------------------------------------------------------------------------------------------ R^2


def test_r2_matches_sklearn():
    rng = np.random.default_rng(2)
    refs = rng.normal(size=(50, 2))
    preds = refs + 0.5 * rng.normal(size=(50, 2))
    result = r2_scores(refs, preds, output_names=["arousal", "valence"])
    assert result["r2"] == pytest.approx(r2_score(refs, preds))
    assert result["arousal_r2"] == pytest.approx(r2_score(refs[:, 0], preds[:, 0]))
    assert result["valence_r2"] == pytest.approx(r2_score(refs[:, 1], preds[:, 1]))


def test_r2_hand_values():
    # references 1, 2, 3 (mean 2, total SS 2); predictions 1, 2, 4 -> residual SS 1 -> R^2 = 0.5
    assert r2_scores([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == {"r2": 0.5, "output_0_r2": 0.5}


def test_r2_validates():
    with pytest.raises(JukeboxInputError, match="same shape"):
        r2_scores([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0])
    with pytest.raises(JukeboxInputError, match="at least 2 examples"):
        r2_scores([1.0], [1.0])
    with pytest.raises(JukeboxInputError, match="output_names"):
        r2_scores([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], output_names=["a"])


# ------------------------------------------------------------------------------------------------ song-level


def _clip_logits():
    # Song "a": 3 clips over classes 0..2, strategies disagree:
    #   argmaxes 0, 0, 1 -> vote 0; element-wise max (3, 0, 9) -> max 2;
    #   mean logits (1.67, 0, 3.67) -> 2; mean softmax favours class 0 (two confident clips).
    a = np.array([[3.0, 0.0, 2.9], [2.0, 0.0, 1.9], [0.0, 0.0, 9.0]])
    b = np.array([[0.0, 5.0, 0.0]])
    return np.vstack([a, b]), ["a", "a", "a", "b"]


def test_aggregation_strategies_hand_values():
    logits, songs = _clip_logits()
    expected = {"vote": [0, 1], "max": [2, 1], "mean_logits": [2, 1]}
    for strategy, preds in expected.items():
        names, got = aggregate_clip_logits(logits, songs, strategy)
        assert names == ["a", "b"] and got.tolist() == preds, strategy
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    _, got = aggregate_clip_logits(logits, songs, "mean_softmax")
    assert got.tolist() == [int(probs[:3].mean(0).argmax()), 1]


def test_vote_ties_go_to_lowest_class():
    logits = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert aggregate_clip_logits(logits, ["s", "s"], "vote")[1].tolist() == [1]


def test_aggregation_errors():
    logits, songs = _clip_logits()
    with pytest.raises(JukeboxInputError, match="Unknown aggregation strategy 'median'"):
        aggregate_clip_logits(logits, songs, "median")
    with pytest.raises(JukeboxInputError, match="got 2 song ids for 4 clips"):
        aggregate_clip_logits(logits, songs[:2], "vote")


def test_song_key_scores_and_selection():
    # two songs in C major (id 0) and A minor (id 21), two clips each
    logits = np.full((4, 24), -5.0)
    logits[0, 0], logits[1, 7] = 4.0, 5.0  # song x: clip says C, clip says G (fifth) more strongly
    logits[2, 21], logits[3, 21] = 3.0, 3.0  # song y: both clips A minor
    result = song_key_scores([0, 0, 21, 21], logits, ["x", "x", "y", "y"])
    assert result["clip_weighted_score"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert result["max_weighted_score"] == pytest.approx((0.5 + 1) / 2)  # max picks G major for song x
    assert result["vote_weighted_score"] == pytest.approx(1.0)  # tie -> lowest id, C major
    assert best_aggregation(result) == "vote"
    with pytest.raises(JukeboxInputError, match="different reference keys"):
        song_key_scores([0, 1, 21, 21], logits, ["x", "x", "y", "y"])


# ------------------------------------------------------------------------------------------------ task dispatch


def test_compute_task_metrics_per_problem_type():
    rng = np.random.default_rng(3)
    genre = compute_task_metrics("gtzan", np.eye(10)[[0, 1, 2, 3]], [0, 1, 2, 0])
    assert genre["accuracy"] == 0.75 and genre["primary"] == 0.75

    tags = rng.integers(0, 2, (30, 50))
    tag_logits = rng.normal(size=(30, 50)) + 2 * tags
    mtt = compute_task_metrics("magnatagatune", tag_logits, tags)
    assert mtt["primary"] == mtt["roc_auc"] > 0.8

    y = rng.normal(size=(20, 2))
    emo = compute_task_metrics("emomusic", y + 0.1, y)
    assert emo["primary"] == emo["r2"] and {"arousal_r2", "valence_r2"} <= set(emo)

    logits = np.zeros((4, 24))
    logits[[0, 1, 2, 3], [0, 7, 21, 21]] = 1.0
    key = compute_task_metrics("giantsteps", logits, [0, 0, 21, 21], song_ids=["x", "x", "y", "y"])
    assert key["aggregation"] in AGGREGATION_STRATEGIES
    assert key["primary"] == key["weighted_score"] == key[f"{key['aggregation']}_weighted_score"]
    fixed = compute_task_metrics("giantsteps", logits, [0, 0, 21, 21], song_ids=["x", "x", "y", "y"], aggregation="max")
    assert fixed["aggregation"] == "max"
    with pytest.raises(JukeboxInputError, match="pass song_ids"):
        compute_task_metrics("giantsteps", logits, [0, 0, 21, 21])


def test_make_compute_metrics_for_trainer():
    compute = make_compute_metrics("gtzan")
    out = compute(EvalPrediction(predictions=np.eye(10)[[0, 1, 2]], label_ids=np.array([0, 1, 1])))
    assert out["accuracy"] == pytest.approx(2 / 3) and out["primary"] == out["accuracy"]
    logits = np.zeros((2, 24))
    logits[:, 3] = 1.0
    compute_key = make_compute_metrics("synthetic_key", song_ids=["s", "s"])
    out = compute_key(EvalPrediction(predictions=(logits,), label_ids=np.array([3, 3])))
    assert out["primary"] == 1.0 and all(isinstance(v, float) for v in out.values())


# ------------------------------------------------------------------------------------------------ evaluate


@pytest.mark.parametrize(
    "name, kwargs, function, fkwargs",
    [
        ("accuracy", dict(predictions=[0, 2, 1], references=[0, 1, 1]), accuracy, {}),
        ("mirex_key", dict(predictions=["G major", "A minor"], references=["C major", "C major"]), key_scores, {}),
        ("mirex_key", dict(predictions=[7, 21], references=[0, 0]), key_scores, {}),
        (
            "multilabel",
            dict(predictions=[[0.9, 0.2], [0.1, 0.7], [0.8, 0.4]], references=[[1, 0], [0, 1], [1, 0]]),
            multilabel_scores,
            {},
        ),
        (
            "r2",
            dict(
                predictions=[[0.1, 1.0], [0.9, 0.1], [2.1, -1.0]],
                references=[[0.0, 1.0], [1.0, 0.0], [2.0, -1.0]],
                output_names=["arousal", "valence"],
            ),
            r2_scores,
            {"output_names": ["arousal", "valence"]},
        ),
        ("r2", dict(predictions=[0.1, 0.9, 2.1], references=[0.0, 1.0, 2.0]), r2_scores, {}),
    ],
)
def test_evaluate_modules_load_offline(name, kwargs, function, fkwargs):
    import evaluate

    metric = evaluate.load(metric_path(name))
    got = metric.compute(**kwargs)
    expected = function(kwargs["references"], kwargs["predictions"], **fkwargs)
    assert got == pytest.approx(expected)


def test_evaluate_metric_classes_importable_and_batched():
    metric = MirexKeyMetric()
    metric.add_batch(predictions=[0, 7], references=[0, 0])
    metric.add_batch(predictions=[12], references=[0])
    assert metric.compute()["weighted_score"] == pytest.approx((1.0 + 0.5 + 0.2) / 3)
    assert load_metric("accuracy").compute(predictions=[1, 1], references=[1, 0]) == {"accuracy": 0.5}
    with pytest.raises(JukeboxInputError, match="Unknown metric 'f1'"):
        metric_path("f1")


def test_evaluate_module_scripts_use_one_import_per_line():
    # evaluate parses a module's imports line by line; "import a, b" breaks loading (hf_mechanics 6).
    for name in ("accuracy", "multilabel", "r2", "mirex_key"):
        for line in open(metric_path(name), encoding="utf-8"):
            if line.startswith(("import ", "from ")):
                assert "," not in line, line
