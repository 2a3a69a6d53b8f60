"""pretext.cache: one cache folder, one content key and one entry-health check for every modality."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pretext.cache import cache_dir, cache_key, file_fingerprint, files_damage, resolve_cache, reuse_entry


def test_cache_dir_reads_medssl_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path and cache_dir("volume") == tmp_path / "volume"
    monkeypatch.setenv("MEDSSL_CACHE", "")  # empty counts as unset (not the working folder)
    assert cache_dir("signal") == Path.home() / ".cache" / "medssl" / "signal"
    monkeypatch.delenv("MEDSSL_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "medssl"


@pytest.mark.parametrize("value", [None, False, "none", "NONE", " off ", ""])
def test_resolve_cache_none(value):
    assert resolve_cache(value, "volume") is None


def test_resolve_cache_auto_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "root"))
    for auto in ("auto", True, "on"):
        assert resolve_cache(auto, "signal") == tmp_path / "root" / "signal"
    # a given folder gets the same subfolder on every side
    assert resolve_cache(str(tmp_path / "c"), "volume") == tmp_path / "c" / "volume"
    assert resolve_cache(tmp_path / "c") == tmp_path / "c"


def test_fingerprint_and_key_follow_content_and_settings(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"1234")
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"xx")
    (series / "2.dcm").write_bytes(b"yyy")
    fp = file_fingerprint([a, series, tmp_path / "gone"])
    assert fp[0][:2] == (str(a.resolve()), 4) and fp[1][1] == 5 and fp[2][1:] == (-1, -1)
    key = cache_key("kind", [a], {"x": 1})
    assert key.startswith("kind-") and len(key) == len("kind-") + 16
    assert cache_key("kind", [a], {"x": 1}) == key  # stable
    assert cache_key("kind", [a], {"x": 2}) != key  # a setting changes it
    assert cache_key("kind", [a], {"x": 1}, version=2) != key  # a store format changes it
    a.write_bytes(b"12345")
    assert cache_key("kind", [a], {"x": 1}) != key  # the file changes it
    assert len(cache_key("k", [a], {}, length=20)) == len("k-") + 20


def test_entry_damage_and_reuse(tmp_path):
    entry = tmp_path / "e"
    entry.mkdir()
    (entry / "data.bin").write_bytes(b"abcd")
    sizes = {"data.bin": 4, "meta.json": None}
    assert files_damage(entry, sizes) == "meta.json is missing"
    (entry / "meta.json").write_text("{}")
    assert files_damage(entry, sizes) is None
    assert reuse_entry(entry, lambda f: files_damage(f, sizes), "test store")
    os.truncate(entry / "data.bin", 2)
    assert files_damage(entry, sizes) == "data.bin has 2 bytes, 4 were written"
    with pytest.warns(UserWarning, match=r"test store .*e is damaged \(data.bin has 2 bytes.*rebuilding"):
        assert not reuse_entry(entry, lambda f: files_damage(f, sizes), "test store")
    assert not entry.exists()
    assert not reuse_entry(entry, lambda f: None, "test store")  # nothing there
