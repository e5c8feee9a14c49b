"""Artist / genre / lyrics -> the label vector (`metadata`) of a Jukebox prior.

The label vector is `[total_length, offset, sample_length, artist_id, genre ids (-1 padded), lyric
tokens...]` (int64). The vocabularies are those of the released models (`jukebox_ids/`): v2 for the 5b
priors and the upsamplers, v3 for the 1b_lyrics top prior.

Example:

```python
>>> from hf_jukebox_mir.labels import JukeboxLabeller
>>> labeller = JukeboxLabeller.for_config(prior.config)
>>> metadata = labeller.metadata(artist="Ella Fitzgerald", genre="Jazz", lyrics="...",
...                              total_length=180 * 44100, offset=0)
```
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from functools import lru_cache
from importlib import resources

import torch

from .errors import JukeboxInputError

_PUNCT = ".,:;!?-"
# lyric characters in token order (token 0 = padding / unknown)
_V3_CHARS = (
    [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + [str(d) for d in range(10)]
    + list(_PUNCT)
    + ["'", '"', "(", ")", "[", "]", " ", "\t", "\n"]
)
_V2_CHARS = _V3_CHARS[:62] + list(_PUNCT) + ["+", "'", '"', "(", ")", "[", "]", " ", "\t", "\n"]
LYRIC_VOCABULARIES = {2: ["<unk>"] + _V2_CHARS, 3: ["<unk>"] + _V3_CHARS}


def normalise_name(name: str) -> str:
    """v2 name normalisation: lowercase, non-alphanumerics -> "_", runs collapsed, ends stripped."""
    name = "".join(c if ("a" <= c <= "z" or "0" <= c <= "9") else "_" for c in name.lower())
    return re.sub(r"_+", "_", name).strip("_")


@lru_cache(maxsize=None)
def _load_ids(filename: str) -> dict[str, int]:
    table: dict[str, int] = {}
    text = resources.files("hf_jukebox_mir").joinpath("jukebox_ids", filename).read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, idx = line.rpartition(";")
        table.setdefault(name, int(idx))
    return table


def _to_ascii(text: str) -> str:
    """Closest ASCII spelling (NFKD, accents dropped); stands in for `unidecode` when it is absent."""
    try:  # pragma: no cover - optional dependency
        from unidecode import unidecode

        return unidecode(text)
    except ImportError:
        return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def lyric_window(full_tokens: list[int], n_tokens: int, total_length: int, offset: int, duration: int) -> list[int]:
    """The `n_tokens` lyric tokens for a window at `offset` of `duration` samples (original heuristic).

    Short lyrics are left-padded with 0; long ones are cut around the point proportional to the window
    centre.
    """
    if len(full_tokens) < n_tokens:
        return [0] * (n_tokens - len(full_tokens)) + list(full_tokens)
    if not 0 <= offset < total_length:
        raise JukeboxInputError(f"offset must lie in [0, total_length={total_length}), got {offset}.")
    mid = int(len(full_tokens) * (offset + duration / 2.0) / total_length)
    mid = min(max(mid, n_tokens // 2), len(full_tokens) - n_tokens // 2)
    return list(full_tokens[mid - n_tokens // 2 : mid + n_tokens // 2])


class JukeboxLabeller:
    """Names and lyrics -> ids for one label version (2: 5b models and upsamplers; 3: 1b_lyrics)."""

    def __init__(self, version: int = 2, *, max_genres: int = 5, n_lyric_tokens: int = 0, sample_length: int = 1048576):
        if version not in (2, 3):
            raise JukeboxInputError(f"label version must be 2 or 3, got {version!r}.")
        self.version, self.max_genres, self.n_lyric_tokens, self.sample_length = (
            version, max_genres, n_lyric_tokens, sample_length,
        )
        self.artist_table = _load_ids(f"v{version}_artist_ids.txt")
        self.genre_table = _load_ids(f"v{version}_genre_ids.txt")
        self.vocabulary = LYRIC_VOCABULARIES[version]
        self._char_to_id = {c: i for i, c in enumerate(self.vocabulary) if i > 0}

    @classmethod
    def for_config(cls, config) -> "JukeboxLabeller":
        """The labeller matching a `JukeboxPriorConfig`."""
        return cls(config.labels_version, max_genres=config.max_genres, n_lyric_tokens=config.n_lyric_tokens,
                   sample_length=config.sample_length)

    def artist_id(self, artist: str | None) -> int:
        if not artist:
            return 0
        key = artist.lower() if self.version == 3 else normalise_name(artist)
        if key not in self.artist_table:
            warnings.warn(f"Artist {artist!r} (looked up as {key!r}) is not in the v{self.version} vocabulary; using 0 (unknown).")
        return self.artist_table.get(key, 0)

    def genre_ids(self, genre: str | None) -> list[int]:
        if not genre:
            return [0]
        words = [genre.lower()] if self.version == 3 else normalise_name(genre).split("_")
        if len(words) > self.max_genres:
            raise JukeboxInputError(
                f"Genre {genre!r} has {len(words)} words but this prior has {self.max_genres} genre slots."
            )
        missing = [w for w in words if w not in self.genre_table]
        if missing:
            warnings.warn(f"Genre words {missing} are not in the v{self.version} vocabulary; using 0 (unknown).")
        return [self.genre_table.get(w, 0) for w in words]

    def tokenize_lyrics(self, lyrics: str | None) -> list[int]:
        """Clean (ASCII, `\\` -> newline, unknown characters removed) and map characters to ids."""
        if not lyrics:
            return []
        text = _to_ascii(lyrics).replace("\\", "\n")
        return [self._char_to_id[c] for c in text if c in self._char_to_id]

    def decode_lyrics(self, tokens: list[int]) -> str:
        return "".join(self.vocabulary[t] for t in tokens if t > 0)

    def metadata(self, *, artist: str | None = None, genre: str | None = None, lyrics: str | None = None,
                 total_length: int, offset: int = 0, sample_length: int | None = None,
                 batch_size: int = 1) -> torch.LongTensor:
        """The label tensor (batch_size, 4 + max_genres + n_lyric_tokens)."""
        sample_length = self.sample_length if sample_length is None else sample_length
        genres = self.genre_ids(genre)
        genres = genres + [-1] * (self.max_genres - len(genres))
        lyric_tokens: list[int] = []
        if self.n_lyric_tokens:
            lyric_tokens = lyric_window(self.tokenize_lyrics(lyrics), self.n_lyric_tokens, total_length, offset,
                                        sample_length)
        row = [int(total_length), int(offset), int(sample_length), self.artist_id(artist), *genres, *lyric_tokens]
        return torch.tensor([row] * batch_size, dtype=torch.long)


__all__ = ["JukeboxLabeller", "LYRIC_VOCABULARIES", "lyric_window", "normalise_name"]
