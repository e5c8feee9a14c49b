"""Names and lyrics -> the prior's label vector (architecture.md §5)."""

from __future__ import annotations

import pytest
import torch

from hf_jukebox_mir import JukeboxInputError
from hf_jukebox_mir.models.tokenization_jukebox import (
    LYRIC_VOCABULARIES,
    JukeboxTokenizer,
    lyric_window,
    normalise_name,
)


def test_normalise_name():
    assert normalise_name("  The Beatles!! ") == "the_beatles"
    assert normalise_name("Ella   Fitzgerald & Co.") == "ella_fitzgerald_co"
    assert normalise_name("AC/DC") == "ac_dc"


def test_vocabulary_layout_matches_the_original_token_order():
    v2, v3 = LYRIC_VOCABULARIES[2], LYRIC_VOCABULARIES[3]
    assert len(v2) == 80 and len(v3) == 79
    assert v3[1] == "A" and v3[27] == "a" and v3[53] == "0" and v3[63:70] == list(".,:;!?-")
    assert v3[70:79] == ["'", '"', "(", ")", "[", "]", " ", "\t", "\n"]
    assert v2[70] == "+" and v2[71:80] == v3[70:79]


def test_v2_and_v3_lookups():
    v2 = JukeboxTokenizer(2)
    assert v2.artist_id("unknown") == 0 and v2.artist_id("various") == 0 and v2.artist_id(None) == 0
    jazz = v2.genre_ids("Jazz")
    assert len(jazz) == 1 and jazz[0] > 0
    assert len(v2.genre_ids("Pop Rock")) == 2  # v2 genres are a bag of words
    with pytest.warns(UserWarning, match="not in the v2 vocabulary"):
        assert v2.artist_id("No Such Artist 123456") == 0
    v3 = JukeboxTokenizer(3, max_genres=1)
    assert v3.genre_ids("pop rock") == [v3.genre_table.get("pop rock", 0)]  # v3: one id for the whole string
    with pytest.raises(JukeboxInputError, match="has 2 words but this prior has 1 genre slots"):
        JukeboxTokenizer(2, max_genres=1).genre_ids("pop rock")


def test_lyrics_tokens_and_cleaning():
    v3 = JukeboxTokenizer(3)
    tokens = v3.tokenize_lyrics("Héllo, wörld!\\2")
    assert v3.decode_lyrics(tokens) == "Hello, world!\n2"
    assert tokens[:2] == [8, 31]  # "H" = 8, "e" = 27 + 4
    assert v3.tokenize_lyrics("a+b") == [27, 28]  # "+" exists only in v2
    assert JukeboxTokenizer(2).tokenize_lyrics("a+b") == [27, 70, 28]


def test_lyric_window_original_heuristic():
    full = list(range(1, 101))
    assert lyric_window([5, 6], 4, 1000, 0, 100) == [0, 0, 5, 6]  # short: left-padded with 0
    # window centre at 50 % of the song -> tokens around index 50
    assert lyric_window(full, 10, 1000, 450, 100) == list(range(46, 56))
    assert lyric_window(full, 10, 1000, 0, 10) == list(range(1, 11))  # clamped at the start
    assert lyric_window(full, 10, 1000, 990, 100) == list(range(91, 101))  # clamped at the end
    with pytest.raises(JukeboxInputError, match=r"offset must lie in \[0, total_length=1000\)"):
        lyric_window(full, 10, 1000, 1000, 100)


def test_metadata_row_layout():
    labeller = JukeboxTokenizer(3, max_genres=1, n_lyric_tokens=8, sample_length=786432)
    row = labeller.metadata(
        artist="unknown", genre="unknown", lyrics="Hi", total_length=2_000_000, offset=44100, batch_size=2
    )
    assert row.dtype == torch.long and row.shape == (2, 4 + 1 + 8)
    assert row[0, :5].tolist() == [2_000_000, 44100, 786432, 0, 0]
    assert row[0, 5:].tolist() == [0] * 6 + labeller.tokenize_lyrics("Hi")
    v2 = JukeboxTokenizer(2).metadata(genre="jazz", total_length=2_734_080)
    assert v2.shape == (1, 9) and v2[0, 5:].tolist() == [-1, -1, -1, -1]


def test_tokenizer_saves_and_loads_its_vocabularies_without_the_packaged_files(tmp_path, monkeypatch):
    from hf_jukebox_mir.models import tokenization_jukebox

    saved = JukeboxTokenizer(3, max_genres=1, n_lyric_tokens=8, sample_length=786432)
    files = saved.save_pretrained(tmp_path)
    assert sorted(p.name for p in files) == ["artists.json", "genres.json", "lyrics.json", "tokenizer_config.json"]
    expected = saved.metadata(artist="Alan Jackson", genre="Country", lyrics="hello", total_length=2_000_000)
    # a remote-code copy has no jukebox_ids/ beside the module: only the saved files can answer
    monkeypatch.setattr(tokenization_jukebox, "PACKAGED_IDS", tmp_path / "absent")
    tokenization_jukebox._load_ids.cache_clear()
    try:
        refusal = r"is not beside tokenization_jukebox.py .* JukeboxTokenizer.from_pretrained\(folder\)"
        with pytest.raises(JukeboxInputError, match=refusal):
            JukeboxTokenizer(3)
        loaded = JukeboxTokenizer.from_pretrained(tmp_path)
        assert (loaded.version, loaded.max_genres, loaded.n_lyric_tokens) == (3, 1, 8)
        again = loaded.metadata(artist="Alan Jackson", genre="Country", lyrics="hello", total_length=2_000_000)
        assert torch.equal(again, expected) and again[0, 3] > 0
    finally:
        tokenization_jukebox._load_ids.cache_clear()
    with pytest.raises(JukeboxInputError, match="holds no Jukebox tokenizer: tokenizer_config.json"):
        JukeboxTokenizer.from_pretrained(tmp_path / "absent")


# ------------------------------------------------------------------------------ exact parity (issue 17, point 10)


def test_lyrics_are_transliterated_as_the_original_unidecode_does():
    """openai/jukebox cleans lyrics with `unidecode` (a dependency now), not an NFKD approximation."""
    from hf_jukebox_mir.models.tokenization_jukebox import _to_ascii

    assert _to_ascii("Don\u2019t \u2014 \u201cx\u201d \u00df") == 'Don\'t -- "x" ss'
    tokenizer = JukeboxTokenizer(version=3, n_lyric_tokens=0)
    assert (
        tokenizer.decode_lyrics(tokenizer.tokenize_lyrics("Don\u2019t \u2014 \u201cx\u201d \u00df"))
        == 'Don\'t -- "x" ss'
    )


def test_lyrics_without_unidecode_are_refused_not_changed(monkeypatch):
    import builtins

    from hf_jukebox_mir.models.tokenization_jukebox import _to_ascii

    real_import = builtins.__import__

    def no_unidecode(name, *args, **kwargs):
        if name == "unidecode":
            raise ImportError("hidden")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_unidecode)
    assert _to_ascii("plain ASCII") == "plain ASCII"
    with pytest.raises(JukeboxInputError, match=r"need the `unidecode` package"):
        _to_ascii("Don\u2019t")


def test_a_name_listed_twice_keeps_its_last_id_as_in_the_original():
    from hf_jukebox_mir.models.tokenization_jukebox import parse_ids

    assert JukeboxTokenizer(version=3).artist_id("speaker") == 7896  # v3_artist_ids.txt lists it as 3675 and 7896
    assert parse_ids("A;1\nb;2\na;3\n") == {"a": 3, "b": 2}
