"""Artist / genre / lyrics -> the label vector (`metadata`) of a Jukebox prior: [`JukeboxTokenizer`].

The label vector is `[total_length, offset, sample_length, artist_id, genre ids (-1 padded), lyric
tokens...]` (int64). The vocabularies are those of the released models: v2 for the 5b priors and the
upsamplers, v3 for the 1b_lyrics top prior. They ship with the package (`jukebox_ids/`, beside this file)
and travel with a model folder as `artists.json`, `genres.json` and `lyrics.json`
([`JukeboxTokenizer.save_pretrained`]), as the transformers 4.x `JukeboxTokenizer` did, so a
`trust_remote_code=True` user without the package reads them from the folder.

Example:

```python
>>> from hf_jukebox_mir import JukeboxTokenizer
>>> tokenizer = JukeboxTokenizer.for_config(prior.config)
>>> metadata = tokenizer.metadata(artist="Ella Fitzgerald", genre="Jazz", lyrics="...",
...                               total_length=180 * 44100, offset=0)
>>> tokenizer.save_pretrained(folder)  # later: JukeboxTokenizer.from_pretrained(folder)
```
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

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


#: the released vocabularies, shipped beside this file in the package (absent from a remote-code copy)
PACKAGED_IDS = Path(__file__).resolve().parent / "jukebox_ids"
VOCAB_FILES = {"artists": "artists.json", "genres": "genres.json", "lyrics": "lyrics.json"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def tokenizer_folder(level: int) -> str:
    """Sub-folder of a model folder holding the tokenizer of the prior of `level` (a chain has three)."""
    return f"tokenizer_level_{level}"


@lru_cache(maxsize=None)
def _load_ids(filename: str) -> dict[str, int]:
    path = PACKAGED_IDS / filename
    if not path.is_file():
        raise JukeboxInputError(
            f"The packaged vocabulary {filename} is not beside {Path(__file__).name} (a remote-code copy ships "
            "without it): load the tokenizer saved with the model, JukeboxTokenizer.from_pretrained(folder), or "
            "install hf-jukebox-mir."
        )
    return parse_ids(path.read_text(encoding="utf-8"))


def parse_ids(text: str) -> dict[str, int]:
    """`name;id` lines -> `{name.lower(): id}` as openai/jukebox reads them: a name listed twice keeps its LAST id
    (the v3 artist `speaker` is listed as 3675 and 7896; the original's dict assignment keeps 7896)."""
    table: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, idx = line.strip().rpartition(";")
        table[name.lower()] = int(idx)
    return table


def _to_ascii(text: str) -> str:
    """ASCII transliteration with `unidecode`, exactly as openai/jukebox's `TextProcessor.clean` does (a dependency
    of hf-jukebox-mir; GPL-2.0-or-later). Pure ASCII text needs nothing. Without `unidecode`, non-ASCII lyrics are
    refused rather than transliterated differently (other lyric tokens would silently change the conditioning)."""
    if text.isascii():
        return text
    try:
        from unidecode import unidecode
    except ImportError:  # a remote-code user without the package's dependencies
        raise JukeboxInputError(
            "Lyrics with non-ASCII characters need the `unidecode` package to be transliterated as the original "
            "Jukebox does (other spellings give other lyric tokens); install it with `pip install Unidecode`, or "
            "pass ASCII lyrics."
        ) from None
    return unidecode(text)


def lyric_window(full_tokens: Sequence[int], n_tokens: int, total_length: int, offset: int, duration: int) -> list[int]:
    """The `n_tokens` lyric tokens of a window at `offset` of `duration` samples (original
    `get_relevant_lyric_tokens`, including its check `0 <= offset < total_length`).

    Lyrics shorter than `n_tokens` are left-padded with 0; longer ones are cut around the character
    proportional to the window centre `(offset + duration / 2) / total_length`.
    """
    full_tokens = list(full_tokens)
    if len(full_tokens) < n_tokens:
        return [0] * (n_tokens - len(full_tokens)) + full_tokens
    if not 0 <= offset < total_length:
        raise JukeboxInputError(f"offset must lie in [0, total_length={total_length}), got {offset}.")
    mid = int(len(full_tokens) * (offset + duration / 2.0) / total_length)
    mid = min(max(mid, n_tokens // 2), len(full_tokens) - n_tokens // 2)
    return full_tokens[mid - n_tokens // 2 : mid + n_tokens // 2]


class JukeboxTokenizer:
    """Names and lyrics -> ids for one label version (2: 5b models and upsamplers; 3: 1b_lyrics).

    Args:
        version (`int`): label version, 2 or 3.
        max_genres, n_lyric_tokens, sample_length (`int`): the prior's label layout (see [`for_config`]).
        artists, genres (`dict[str, int]`, *optional*): the vocabularies; default: the packaged ones of `version`.
        lyrics (`list[str]`, *optional*): the lyric characters in token order (token 0 = unknown); default: those
            of `version`.
    """

    def __init__(
        self,
        version: int = 2,
        *,
        max_genres: int = 5,
        n_lyric_tokens: int = 0,
        sample_length: int = 1048576,
        artists: dict[str, int] | None = None,
        genres: dict[str, int] | None = None,
        lyrics: Sequence[str] | None = None,
    ):
        if version not in (2, 3):
            raise JukeboxInputError(f"label version must be 2 or 3, got {version!r}.")
        self.version, self.max_genres, self.n_lyric_tokens, self.sample_length = (
            version,
            max_genres,
            n_lyric_tokens,
            sample_length,
        )
        self.artist_table = dict(artists) if artists is not None else _load_ids(f"v{version}_artist_ids.txt")
        self.genre_table = dict(genres) if genres is not None else _load_ids(f"v{version}_genre_ids.txt")
        self.vocabulary = list(lyrics) if lyrics is not None else LYRIC_VOCABULARIES[version]
        self._char_to_id = {c: i for i, c in enumerate(self.vocabulary) if i > 0}

    @classmethod
    def for_config(cls, config, folder: str | os.PathLike | None = None) -> JukeboxTokenizer:
        """The tokenizer of a `JukeboxPriorConfig`: saved in `folder` when it holds one, else the packaged one."""
        if folder is not None and (Path(folder) / TOKENIZER_CONFIG_FILE).is_file():
            tokenizer = cls.from_pretrained(folder)
            if tokenizer.version == config.labels_version:
                return tokenizer
        return cls(
            config.labels_version,
            max_genres=config.max_genres,
            n_lyric_tokens=config.n_lyric_tokens,
            sample_length=config.sample_length,
        )

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[Path]:
        """Write `artists.json`, `genres.json`, `lyrics.json` and `tokenizer_config.json` to `save_directory`."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        contents = {
            VOCAB_FILES["artists"]: self.artist_table,
            VOCAB_FILES["genres"]: self.genre_table,
            VOCAB_FILES["lyrics"]: self.vocabulary,
            TOKENIZER_CONFIG_FILE: {
                "tokenizer_class": type(self).__name__,
                "version": self.version,
                "max_genres": self.max_genres,
                "n_lyric_tokens": self.n_lyric_tokens,
                "sample_length": self.sample_length,
            },
        }
        written = []
        for name, data in contents.items():
            (folder / name).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            written.append(folder / name)
        return written

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> JukeboxTokenizer:
        """The tokenizer saved in `folder` by [`save_pretrained`] (no packaged file is read)."""
        folder = Path(folder)
        missing = [n for n in (TOKENIZER_CONFIG_FILE, *VOCAB_FILES.values()) if not (folder / n).is_file()]
        if missing:
            raise JukeboxInputError(f"{folder} holds no Jukebox tokenizer: {', '.join(missing)} missing.")

        def read(name: str):
            return json.loads((folder / name).read_text(encoding="utf-8"))

        config = read(TOKENIZER_CONFIG_FILE)
        return cls(
            config["version"],
            max_genres=config["max_genres"],
            n_lyric_tokens=config["n_lyric_tokens"],
            sample_length=config["sample_length"],
            artists=read(VOCAB_FILES["artists"]),
            genres=read(VOCAB_FILES["genres"]),
            lyrics=read(VOCAB_FILES["lyrics"]),
        )

    def artist_id(self, artist: str | None) -> int:
        if not artist:
            return 0
        key = artist.lower() if self.version == 3 else normalise_name(artist)
        if key not in self.artist_table:
            warnings.warn(
                f"Artist {artist!r} (looked up as {key!r}) is not in the v{self.version} vocabulary; "
                "using 0 (unknown).",
                stacklevel=2,
            )
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
            warnings.warn(
                f"Genre words {missing} are not in the v{self.version} vocabulary; using 0 (unknown).", stacklevel=2
            )
        return [self.genre_table.get(w, 0) for w in words]

    def tokenize_lyrics(self, lyrics: str | None) -> list[int]:
        """Clean (ASCII, `\\` -> newline, unknown characters removed) and map characters to ids."""
        if not lyrics:
            return []
        text = _to_ascii(lyrics).replace("\\", "\n")
        return [self._char_to_id[c] for c in text if c in self._char_to_id]

    def decode_lyrics(self, tokens: list[int]) -> str:
        return "".join(self.vocabulary[t] for t in tokens if t > 0)

    def metadata(
        self,
        *,
        artist: str | None = None,
        genre: str | None = None,
        lyrics: str | None = None,
        total_length: int,
        offset: int = 0,
        sample_length: int | None = None,
        batch_size: int = 1,
    ) -> torch.LongTensor:
        """The label tensor (batch_size, 4 + max_genres + n_lyric_tokens)."""
        sample_length = self.sample_length if sample_length is None else sample_length
        genres = self.genre_ids(genre)
        genres = genres + [-1] * (self.max_genres - len(genres))
        lyric_tokens: list[int] = []
        if self.n_lyric_tokens:
            lyric_tokens = lyric_window(
                self.tokenize_lyrics(lyrics), self.n_lyric_tokens, total_length, offset, sample_length
            )
        row = [int(total_length), int(offset), int(sample_length), self.artist_id(artist), *genres, *lyric_tokens]
        return torch.tensor([row] * batch_size, dtype=torch.long)


__all__ = ["JukeboxTokenizer", "LYRIC_VOCABULARIES", "lyric_window", "normalise_name", "tokenizer_folder"]
