"""Patch sampling from whole scans: bounds, foreground share, padding, bad options, masks, ROI, exact resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _volfiles import write_medmnist, write_nifti

from pretext.config import TrainConfig
from pretext.data import load_data
from pretext.errors import ConfigError, DataError
from volssl.sampling import PatchConfig, VolumeSplit, axis_starts, grid_corners
from volssl.store import write_arrays


def _split(vols: np.ndarray, cfg: PatchConfig, threshold: float = 0.5) -> VolumeSplit:
    import tempfile

    n = len(vols)
    store = write_arrays(Path(tempfile.mkdtemp(prefix="patches-")), list(vols), threshold)
    return VolumeSplit(store, np.arange(n), np.zeros(n, np.int64), np.arange(n), [str(i) for i in range(n)], cfg)


def _blob_volumes(n: int = 3, shape=(40, 32, 24)) -> np.ndarray:
    vols = np.zeros((n, 1, *shape), dtype=np.float32)
    for i in range(n):
        vols[i, 0, 5 + i: 9 + i, 20:24, 3:6] = 1.0  # a small foreground blob, off-centre
    return vols


def test_patches_stay_inside_and_foreground_share_holds() -> None:
    vols = _blob_volumes()
    cfg = PatchConfig((16, 8, 8), patches_per_volume=4, foreground=0.3)
    stream = _split(vols, cfg).patch_stream(seed=3)
    n_fg = n_all = 0
    for j in range(600):
        item = stream[j]
        i = int(item["index"][0])
        assert item["x"].shape == (4, 1, 16, 8, 8)
        for corner, flag, x in zip(item["corner"].numpy(), item["foreground"].numpy(), item["x"], strict=True):
            assert (corner >= 0).all() and (corner + cfg.patch <= np.asarray(vols.shape[2:])).all()
            z, y, w = corner
            assert torch.equal(x[0], torch.from_numpy(vols[i, 0, z:z + 16, y:y + 8, w:w + 8]))
            if flag:
                assert x.sum() > 0, "a foreground patch holds foreground"
        n_fg += int(item["foreground"].sum())
        n_all += 4
    assert abs(n_fg / n_all - 0.3) < 0.04
    for share, expect in ((0.0, 0.0), (1.0, 1.0)):
        s = _split(vols, PatchConfig((16, 8, 8), 2, share)).patch_stream(seed=0)
        assert np.mean([s[j]["foreground"].float().mean() for j in range(50)]) == expect
    # uniform patches reach every corner position along an axis over enough draws
    s = _split(vols, PatchConfig((16, 8, 8), 8, 0.0)).patch_stream(seed=1)
    zs = np.concatenate([s[j]["corner"][:, 0].numpy() for j in range(200)])
    assert zs.min() == 0 and zs.max() == 40 - 16


def test_draws_depend_only_on_seed_and_item() -> None:
    split = _split(_blob_volumes(), PatchConfig((16, 8, 8), 3, 0.5))
    a, b = split.patch_stream(seed=5), split.patch_stream(seed=5)
    for j in (0, 7, 123456):
        assert torch.equal(a[j]["x"], b[j]["x"]) and torch.equal(a[j]["corner"], b[j]["corner"])
    assert not torch.equal(a[1]["corner"], split.patch_stream(seed=6)[1]["corner"])
    batch = a.collate_fn([a[0], a[1]])
    assert batch["x"].shape == (6, 1, 16, 8, 8) and batch["label"].shape == (6,)


def test_volumes_smaller_than_the_patch_are_centred_and_padded(tmp_path: Path) -> None:
    vols = np.ones((2, 1, 6, 10, 12), dtype=np.float32)
    split = _split(vols, PatchConfig((8, 8, 16), 2, 0.0))
    x = split.patch_stream(seed=0)[0]["x"][0, 0]
    assert x.shape == (8, 8, 16)
    assert x.sum() == 6 * 8 * 12  # all voxels along the short axes, a window along H
    assert x[0].sum() == 0 and x[1].sum() > 0 and x[:, :, :2].sum() == 0  # centred: pad 1 | 6 | 1, 2 | 12 | 2
    assert axis_starts(6, 8, 0.25) == [-1]
    path = write_medmnist(tmp_path / "tinymnist3d.npz", side=8)
    with pytest.warns(UserWarning, match=r"smaller than patch=\(12, 12, 12\).*zero-padded"):
        data = load_data(f"medmnist3d:{path}?patch=12&cache=none")
    assert data.input_shape == (1, 12, 12, 12) and data.splits["train"].load(0).shape == (1, 12, 12, 12)


def test_grid_covers_the_volume() -> None:
    corners = grid_corners((40, 32, 24), (16, 16, 16), 0.25)
    assert corners[:, 0].tolist().count(0) and corners[:, 0].max() == 24 and corners[:, 2].max() == 8
    cover = np.zeros((40, 32, 24), bool)
    for z, y, x in corners:
        cover[z:z + 16, y:y + 16, x:x + 16] = True
    assert cover.all()


@pytest.mark.parametrize("opt, match", [
    ("foreground=1.5", r"foreground=1.5 .* \[0, 1\]"), ("foreground=-0.1", r"foreground=-0.1"),
    ("patches_per_volume=0", "patches_per_volume=0"), ("pool=median", "pool='median'"),
    ("overlap=1", "overlap=1"), ("patch=0,8,8", "patch="),
])
def test_bad_patch_options_are_refused(tmp_path: Path, opt: str, match: str) -> None:
    path = write_medmnist(tmp_path / "tinymnist3d.npz", side=8)
    with pytest.raises(ConfigError, match=match):
        load_data(f"medmnist3d:{path}?patch=8&cache=none&{opt}")


def _manifest(tmp_path: Path, rows: list[dict], name: str = "m.csv") -> Path:
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_mask_column_centres_foreground_patches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((30, 30, 20)).astype(np.float32)
    mask = np.zeros((30, 30, 20), np.float32)
    mask[2:5, 24:28, 15:18] = 1
    write_nifti(tmp_path / "a.nii.gz", img)
    write_nifti(tmp_path / "a_mask.nii.gz", mask)
    m = _manifest(tmp_path, [{"path": "a.nii.gz", "label": 0, "patient_id": "p0", "mask": "a_mask.nii.gz"}])
    data = load_data(f"manifest3d:{m}?normalize=minmax&patch=8,8,8&patches_per_volume=4&foreground=1")
    stream = data.splits["train"].patch_stream(seed=0)
    for j in range(20):
        for c in stream[j]["corner"].numpy():
            box = np.zeros_like(mask, bool)
            box[c[0]:c[0] + 8, c[1]:c[1] + 8, c[2]:c[2] + 8] = True
            assert (box & (mask > 0)).any(), "every patch holds mask voxels"


def test_mask_on_another_grid_is_named(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz", np.random.default_rng(0).random((20, 20, 10)))
    write_nifti(tmp_path / "a_mask.nii.gz", np.ones((20, 20, 12)))
    m = _manifest(tmp_path, [{"path": "a.nii.gz", "label": 0, "patient_id": "p0", "mask": "a_mask.nii.gz"},
                             {"path": "b.nii.gz", "label": 1, "patient_id": "p1", "mask": ""}])
    write_nifti(tmp_path / "b.nii.gz", np.random.default_rng(1).random((20, 20, 10)))
    with pytest.raises(DataError, match=r"mask .*a_mask.nii.gz.* does not match image .*a.nii.gz.*resample the mask"):
        load_data(f"manifest3d:{m}?normalize=minmax&patch=8")


def test_roi_centres_and_outside_centre(tmp_path: Path) -> None:
    img = np.zeros((40, 40, 20), np.float32)
    img[28:32, 8:12, 10:14] = 1.0
    write_nifti(tmp_path / "a.nii.gz", img + 0.01, spacing=(1.0, 1.0, 2.0))
    rows = [{"path": "a.nii.gz", "label": 1, "patient_id": "p0", "roi_i": 30, "roi_j": 10, "roi_k": 12}]
    data = load_data(f"manifest3d:{_manifest(tmp_path, rows)}?orientation=none&normalize=none&patch=4,4,4")
    split = data.splits["train"]
    assert split.grid(0).tolist() == [[28, 8, 10]] and (split.load(0) > 1).all()  # the patch on the lesion
    world = {"roi_x": 30.0, "roi_y": 10.0, "roi_z": 24.0}  # diag(1, 1, 2) affine
    rows_w = [{"path": "a.nii.gz", "label": 1, "patient_id": "p0", **world}]
    data = load_data(f"manifest3d:{_manifest(tmp_path, rows_w, 'w.csv')}?orientation=none&normalize=none&patch=4,4,4"
                     "&roi_size=8,8,8&overlap=0")
    assert len(data.splits["train"].grid(0)) == 8 and (data.splits["train"].load(0) > 1).all()
    rows[0]["roi_i"] = 80
    with pytest.raises(DataError, match=r"a.nii.gz: ROI centre \(roi_i=80.*outside.*shape \(40, 40, 20\)"):
        load_data(f"manifest3d:{_manifest(tmp_path, rows, 'bad.csv')}?orientation=none&normalize=none&patch=4")


def test_all_background_volume_warns(tmp_path: Path) -> None:
    write_nifti(tmp_path / "empty.nii.gz", np.zeros((16, 16, 16)))
    write_nifti(tmp_path / "full.nii.gz", np.random.default_rng(0).random((16, 16, 16)) + 1)
    with pytest.warns(UserWarning, match=r"1 of 2 volume\(s\) have no voxel above foreground_threshold=0.*empty.nii.gz"):
        load_data(f"nifti:{tmp_path}?normalize=none&patch=8&foreground=0.5")


# -- training on patches ---------------------------------------------------------------------------------------
SMALL = {"resnet18_3d": {"widen_factor": 0.125},
         "vit_3d": {"embed_dim": 48, "depth": 1, "num_heads": 2, "patch_size": 4}}
TASKS = {
    "rotation": ("resnet18_3d", {}),
    "slice_order": ("resnet18_3d", {"num_permutations": 6}),
    "pixel_shuffle": ("resnet18_3d", {"max_block": (3, 3, 3), "num_blocks": 50}),
    "mae3d": ("vit_3d", {"decoder_dim": 48, "decoder_heads": 2, "decoder_depth": 1}),
    "combined": ("vit_3d", {"tasks": ("rotation", "mae3d"),
                            "options": {"mae3d": {"decoder_dim": 48, "decoder_heads": 2, "decoder_depth": 1}}}),
}


@pytest.fixture
def scan_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, (shape, sp) in enumerate([((30, 26, 12), (1, 1, 2)), ((24, 30, 14), (1.2, 1, 1.6)), ((20, 20, 20), (1, 1, 1))]):
        a = rng.random(shape).astype(np.float32)
        a[5:12, 4:10, 3:8] += 2
        write_nifti(folder / f"s{i}.nii.gz", a, spacing=sp)
    return folder


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_volume_task_trains_on_patches(scan_folder: Path, task: str) -> None:
    from pretext.pipeline import pretrain

    enc, tcfg = TASKS[task]
    spec = f"nifti:{scan_folder}?spacing=1.5&normalize=minmax&patch=8&patches_per_volume=2&foreground=0.5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, res = pretrain(task, enc, spec, None, {"steps": 2, "batch_size": 2, "progress": False, "precision": "32",
                                                       "warmup_steps": 1}, tcfg, SMALL[enc])
    assert res.steps == 2 and np.isfinite(res.history[-1]["loss"])


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.faults
def test_resume_with_patches_is_bit_exact(scan_folder: Path, tmp_path: Path) -> None:
    """fit 6 steps == fit interrupted during step 4 (checkpoint at 3) + resume, with 2 loader workers."""
    from pretext.engine import fit
    from pretext.pipeline import build_run

    spec = f"nifti:{scan_folder}?spacing=1.5&normalize=minmax&patch=8&patches_per_volume=2&foreground=0.5"
    cfg = TrainConfig(steps=6, batch_size=2, progress=False, precision="32", warmup_steps=1, ckpt_every=100,
                      num_workers=2, log_every=1)

    def run(out: Path, stop_at: int | None = None, resume: bool = False) -> torch.nn.Module:
        module, data, rc = build_run("pixel_shuffle", "resnet18_3d", spec, TASKS["pixel_shuffle"][1],
                                     SMALL["resnet18_3d"], seed=cfg.seed)
        if stop_at is not None:
            forward, calls = module.forward, [0]

            def interrupted(batch, generator=None):
                calls[0] += 1
                if calls[0] == stop_at:
                    raise KeyboardInterrupt
                return forward(batch, generator)

            module.forward = interrupted
        fit(module, data, cfg, out_dir=out, resume=resume, run_config=rc)
        return module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        straight = run(tmp_path / "a")
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "b", stop_at=4)  # checkpoints at step 3
        resumed = run(tmp_path / "b", resume=True)
    a, b = _weights(straight), _weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pretrain_batches_are_patches(scan_folder: Path) -> None:
    data = load_data(f"nifti:{scan_folder}?spacing=1.5&normalize=minmax&patch=8,8,4&patches_per_volume=3")
    TrainConfig(batch_size=2)  # the engine's defaults accept it
    stream = data.splits["train"].patch_stream(seed=0)
    batch = stream.collate_fn([stream[0], stream[1]])
    assert batch["x"].shape == (6, 1, 8, 8, 4) and data.input_shape == (1, 8, 8, 4)
