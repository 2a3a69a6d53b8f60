"""The ragged scan store: shapes/spacings kept per volume, parallel = serial, resume, broken files, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _volfiles import write_nifti

from pretext.data import load_data
from pretext.errors import DataError
from volssl.ingest import ingest_files, scans_folder
from volssl.io import read_volume
from volssl.preprocess import PreprocessConfig, preprocess
from volssl.store import default_cache_dir

REPO = Path(__file__).resolve().parents[2]
PREP = PreprocessConfig(spacing=1.5, normalize="minmax")
SHAPES = [((30, 20, 12), (1.0, 1.0, 2.0)), ((40, 36, 10), (0.8, 0.8, 2.5)), ((16, 18, 20), (1.5, 1.5, 1.5)),
          ((24, 24, 9), (1.2, 1.0, 3.0))]


def _scans(folder: Path, n: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        shape, sp = SHAPES[i % len(SHAPES)]
        a = rng.random(shape).astype(np.float32)
        a[shape[0] // 4: shape[0] // 2, 2:8, 1:5] += 5.0
        out.append(str(write_nifti(folder / f"s{i:02d}.nii.gz", a, spacing=sp)))
    return out


def test_volumes_keep_their_own_shapes_and_spacing(tmp_path: Path) -> None:
    paths = _scans(tmp_path / "in")
    src, metas, broken = ingest_files(paths, tmp_path / "cache", PREP, progress=False)
    assert not broken and len(src) == 4
    assert len({tuple(m["shape"]) for m in metas}) == 4  # no common shape
    for i, p in enumerate(paths):
        ref, affine, _ = preprocess(read_volume(p), PREP)
        assert src.shape(i) == ref.shape
        # resized to round(extent / 1.5 mm) voxels per axis (nnU-Net style): the extent is kept exactly
        src_shape, src_sp = SHAPES[i]
        np.testing.assert_allclose(np.asarray(metas[i]["spacing"]) * ref.shape[1:], np.multiply(src_shape, src_sp))
        np.testing.assert_allclose(metas[i]["spacing"], (1.5, 1.5, 1.5), rtol=0.05)
        np.testing.assert_allclose(np.asarray(metas[i]["affine"]), affine)
        # a patch read equals the same box of the preprocessed volume (float16 store)
        lo, hi = (1, 2, 0), (5, 7, 4)
        np.testing.assert_allclose(src.read(i, lo, hi), ref[:, 1:5, 2:7, 0:4], atol=2e-3)
        assert metas[i]["fg_count"] > 0 and metas[i]["fg_box"] is not None
    # reopening reads the index (no ingest); the completion marker names every volume
    sets = list((scans_folder(tmp_path / "cache", PREP, None) / "sets").glob("*.json"))
    assert len(sets) == 1 and json.loads(sets[0].read_text())["complete"]


def test_folder_of_mixed_shapes_needs_size_or_patch(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _scans(folder, 2)
    with pytest.raises(DataError, match=r"\?patch=D,H,W"):
        load_data(f"nifti:{folder}?spacing=1.5")
    data = load_data(f"nifti:{folder}?spacing=1.5&patch=8,8,8")
    assert data.input_shape == (1, 8, 8, 8) and len(data.splits["train"]) == 2
    assert {"shape_d", "shape_h", "shape_w", "spacing_d", "foreground_voxels"} <= set(data.splits["train"].meta.columns)


def test_broken_file_is_named_and_good_volumes_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = _scans(folder, 3)
    bad = folder / "zz_broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not a nifti" * 10)
    with pytest.raises(DataError, match="zz_broken.nii.gz") as err:
        load_data(f"nifti:{folder}?spacing=1.5&normalize=minmax&patch=8")
    assert "kept" in str(err.value)
    pool = scans_folder(default_cache_dir(), PREP, None)
    assert len(list((pool / "vol").glob("*.json"))) == 3  # nothing already ingested is lost
    with pytest.warns(UserWarning, match="zz_broken"):
        data = load_data(f"nifti:{folder}?spacing=1.5&normalize=minmax&patch=8&skip_broken=true")
    assert str(bad) in data.meta["skipped"] and len(data.splits["train"]) == len(paths)


def test_killed_ingest_resumes_with_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL a (slowed) ingest after two volumes; the rerun ingests only the rest, in 2 processes, and the
    store equals a fresh serial ingest."""
    paths = _scans(tmp_path / "in", 8)
    cache = tmp_path / "cache"
    script = f"""
import sys, time, json
sys.path.insert(0, {str(REPO)!r})
import volssl.ingest as S
from volssl.preprocess import PreprocessConfig
real = S.ingest_one
def slow(job):
    out = real(job)
    time.sleep(0.4)
    return out
S.ingest_one = slow
S.ingest_files({paths!r}, {str(cache)!r}, PreprocessConfig(spacing=1.5, normalize="minmax"), progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    pool = scans_folder(cache, PREP, None)
    t0 = time.time()
    while len(list((pool / "vol").glob("*.json"))) < 2 and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted((pool / "vol").glob("*.json"))
    assert 2 <= len(done) < 8, "the ingest should have been killed part way"
    assert not list((pool / "sets").glob("*.json")), "no completion marker for a killed ingest"
    before = {f.stem: (pool / "vol" / f"{f.stem}.npy").stat().st_mtime_ns for f in done}
    calls = []
    import volssl.ingest as S

    real_run = S.run_jobs
    monkeypatch.setattr(S, "run_jobs", lambda jobs, *a, **k: calls.append(len(jobs)) or real_run(jobs, *a, **k))
    src, metas, _ = ingest_files(paths, cache, PREP, num_workers=2, progress=False)
    assert calls == [8 - len(done)]
    for fid, mtime in before.items():
        assert (pool / "vol" / f"{fid}.npy").stat().st_mtime_ns == mtime  # not redone
    ref, _, _ = ingest_files(paths, tmp_path / "fresh", PREP, progress=False)
    for i in range(8):
        assert np.array_equal(src.volume(i), ref.volume(i))


def _peak_rss_mb(tmp_path: Path, paths: list[str], tag: str) -> float:
    script = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
import torch; torch.set_num_threads(1)
from volssl.ingest import ingest_files
from volssl.preprocess import PreprocessConfig
ingest_files({paths!r}, {str(tmp_path / ('cache-' + tag))!r}, PreprocessConfig(normalize="minmax"), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", errors="replace", check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def test_ingest_memory_does_not_grow_with_the_number_of_volumes(tmp_path: Path) -> None:
    """Peak RSS for 12 volumes of 16 MB stays within a few volumes of the peak for 2 (holding them: +160 MB)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "big"
    folder.mkdir()
    paths = [str(write_nifti(folder / f"b{i:02d}.nii", rng.random((160, 160, 160), dtype=np.float32)))
             for i in range(12)]
    few, many = _peak_rss_mb(tmp_path, paths[:2], "few"), _peak_rss_mb(tmp_path, paths, "many")
    assert many - few < 48, f"peak RSS grew from {few:.0f} MB (2 volumes) to {many:.0f} MB (12 volumes)"
