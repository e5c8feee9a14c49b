"""Musical keys: the 24 labels of the key tasks, spellings, and the MIREX relation between two keys.

Shared by the task registry, the datasets and the metrics (its own module so none of them imports another
for a constant).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..models.errors import JukeboxInputError

PITCH_CLASSES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
#: The 24 key labels in JukeMIR's output order: the 12 major keys from C, then the 12 minor keys.
KEY_LABELS = tuple(f"{p} major" for p in PITCH_CLASSES) + tuple(f"{p} minor" for p in PITCH_CLASSES)
_SPELLINGS = {
    **{p.lower(): i for i, p in enumerate(PITCH_CLASSES)},
    "c#": 1,
    "d#": 3,
    "f#": 6,
    "g#": 8,
    "a#": 10,
    "cb": 11,
    "fb": 4,
    "e#": 5,
    "b#": 0,
}
KEY_SCORE_WEIGHTS = OrderedDict(correct=1.0, fifth=0.5, relative=0.3, parallel=0.2, other=0.0)


def key_to_index(key: str | int) -> int:
    """Index in [`KEY_LABELS`] of a key given as an index or a string like `"Eb minor"`, `"d# minor"`, `"F#:major"`.

    Sharps are mapped to their flat spelling (JukeMIR's convention).
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= int(key) < 24:
            raise JukeboxInputError(f"Key index must be in 0..23 (12 major keys, then 12 minor), got {key}.")
        return int(key)
    if not isinstance(key, str):
        raise JukeboxInputError(f"A key must be an index 0..23 or a string like 'Eb minor', got {key!r}.")
    parts = key.replace(":", " ").replace("\t", " ").split()
    if len(parts) != 2 or parts[0].lower() not in _SPELLINGS or parts[1].lower() not in ("major", "minor"):
        raise JukeboxInputError(f"Cannot parse key {key!r}: expected '<tonic> <major|minor>', e.g. 'Eb minor'.")
    return _SPELLINGS[parts[0].lower()] + (12 if parts[1].lower() == "minor" else 0)


def key_relation(reference: str | int, estimate: str | int, *, allow_descending_fifths: bool = False) -> str:
    """How `estimate` relates to `reference`: `correct`, `fifth`, `relative`, `parallel` or `other`.

    `fifth` means the estimate is a perfect fifth *above* the reference in the same mode (also a fifth below
    with `allow_descending_fifths=True`); `relative` is the relative minor of a major reference (9 semitones
    up) or the relative major of a minor one (3 up); `parallel` is the same tonic in the other mode.
    """
    ref, est = key_to_index(reference), key_to_index(estimate)
    ref_tonic, ref_minor = ref % 12, ref >= 12
    est_tonic, est_minor = est % 12, est >= 12
    interval = (est_tonic - ref_tonic) % 12
    if ref == est:
        return "correct"
    if ref_minor == est_minor and (interval == 7 or (allow_descending_fifths and interval == 5)):
        return "fifth"
    if not ref_minor and est_minor and interval == 9:
        return "relative"
    if ref_minor and not est_minor and interval == 3:
        return "relative"
    if ref_tonic == est_tonic:
        return "parallel"
    return "other"


def mirex_key_score(reference: str | int, estimate: str | int, *, allow_descending_fifths: bool = False) -> float:
    """MIREX weighted score of one key estimate (1.0 / 0.5 / 0.3 / 0.2 / 0.0), as `mir_eval.key.weighted_score`."""
    return KEY_SCORE_WEIGHTS[key_relation(reference, estimate, allow_descending_fifths=allow_descending_fifths)]


__all__ = ["KEY_LABELS", "KEY_SCORE_WEIGHTS", "PITCH_CLASSES", "key_relation", "key_to_index", "mirex_key_score"]
