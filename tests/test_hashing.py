"""Source hashing for the conversion audit: started early by the command, never stale."""

from __future__ import annotations

import hashlib
import os

import pytest

from hf_jukebox_mir.conversion import hashing


def test_background_hash_is_used_once_and_is_right(tmp_path, monkeypatch):
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(9 << 20))  # over two read chunks
    hashing.hash_in_background([path, tmp_path / "missing.bin", tmp_path])
    reads = []
    real = hashing._hash
    monkeypatch.setattr(hashing, "_hash", lambda p: reads.append(p) or real(p))
    assert hashing.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reads == []  # the background result was used, not a second read
    assert hashing.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reads == [path]  # a result is used once; later calls read the file again


def test_a_file_changed_after_the_background_hash_is_hashed_again(tmp_path):
    path = tmp_path / "source.bin"
    path.write_bytes(b"old contents")
    hashing.hash_in_background([path])
    hashing._started[next(k for k in hashing._started if k[0] == os.path.realpath(path))].result()
    path.write_bytes(b"new contents, another size")
    assert hashing.sha256_file(path) == hashlib.sha256(b"new contents, another size").hexdigest()


def test_a_missing_file_raises_where_it_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError):
        hashing.sha256_file(tmp_path / "gone.bin")
