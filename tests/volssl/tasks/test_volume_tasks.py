"""Volume pretext tasks: labels and views, overfitting a tiny batch, the engine, real data.

Outputs, seeded determinism, bad options and buildability of every registered task: tests/test_contracts.py.
"""

from __future__ import annotations

import pytest
import torch

from pretext.registry import TASKS, create_task
from tests.components import TASK_OPTIONS, shipped, tiny_encoder, tiny_task

# test-specific settings (the shared tiny options are in tests/components.py)
MAE = TASK_OPTIONS["mae3d"]
COMBINED = {"encoder": "vit_3d", "tasks": ("rotation", "mae3d"), "weights": (1.0, 2.0), "options": {"mae3d": MAE}}
SPECIFIC = {"slice_order": {"num_permutations": 6}, "combined": COMBINED}


def make(name: str, side: int = 16, **overrides):
    options = {**SPECIFIC.get(name, {}), **overrides}
    encoder = options.pop("encoder", None)
    return tiny_task(name, encoder, {"img_size": (side,) * 3}, **options)


def batch(n: int = 2, side: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, side, generator=g)
    x[:, :, side // 4: 3 * side // 4, side // 3:, :side // 2] += 0.5  # some structure to recognise
    return {"x": x.clamp(0, 1)}


@pytest.mark.parametrize(("name", "factor", "steps", "overrides"), [
    ("rotation", 0.2, 40, {}), ("slice_order", 0.2, 40, {}), ("pixel_shuffle", 0.5, 40, {}),
    # masked voxels of the noisy test volumes are unpredictable: per-patch normalised targets of
    # noise leave only memorisation, so the raw targets are used here
    ("mae3d", 0.5, 40, {"norm_pix_loss": False}),
    ("combined", 0.3, 40, {"options": {"mae3d": {**MAE, "norm_pix_loss": False}}}),
])
def test_overfits_a_fixed_batch(name, factor, steps, overrides):
    """With the views fixed (same generator seed every step), the loss must drop by ``factor``."""
    task = make(name, **overrides)
    b = batch(n=4)
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = task(b, generator=torch.Generator().manual_seed(0))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-5:]) < factor * losses[0], losses


def test_rotation_labels_match_views():
    task = make("rotation").eval()
    seen = {}

    def spy(v: torch.Tensor) -> torch.Tensor:
        seen["v"] = v
        return torch.zeros(len(v), task.encoder.num_features)

    task.encoder.forward_features = spy
    x = batch()["x"]
    g = torch.Generator().manual_seed(3)
    task({"x": x}, generator=g)
    labels = torch.randint(0, 10, (2,), generator=torch.Generator().manual_seed(3))
    from volssl.transforms import rotate

    torch.testing.assert_close(rotate(seen["v"], labels, 10, inverse=True), x)


def test_slice_order_views_follow_the_label():
    task = make("slice_order")
    length = 16
    ramp = torch.arange(length, dtype=torch.float32).view(1, 1, length, 1, 1).expand(2, 1, length, 16, 16)
    slabs, labels = task.make_views(ramp.contiguous(), torch.Generator().manual_seed(2))
    # slab content reveals its depth: position i must hold slab perms[label][i]
    depth = slabs[:, :, 0, 0, 0, 0]
    order = task.perms[labels]
    assert torch.equal(depth.argsort(dim=1).argsort(dim=1), order)


def test_mae_masks_exactly_the_ratio():
    task = make("mae3d")
    out = task(batch(), generator=torch.Generator().manual_seed(0))
    assert float(out["masked_fraction"]) == pytest.approx(1 - int(64 * 0.25) / 64)
    vol, mask = task.reconstruct(batch()["x"], torch.Generator().manual_seed(0))
    assert vol.shape == mask.shape[:1] + (1, 16, 16, 16) and float(mask.mean()) == pytest.approx(0.75)


def test_combined_is_the_weighted_sum_of_its_parts():
    task = make("combined").eval()
    b = batch()
    with torch.no_grad():
        out = task(b, generator=torch.Generator().manual_seed(9))
        g = torch.Generator().manual_seed(9)  # parts draw from one generator, in order
        rot = task.parts["rotation"](b, generator=g)["loss"]
        mae = task.parts["mae3d"](b, generator=g)["loss"]
    torch.testing.assert_close(out["loss"], rot + 2.0 * mae)
    assert {"rotation_loss", "mae3d_loss", "rotation_acc", "mae3d_masked_fraction"} <= set(out)
    assert task.parts["rotation"].encoder is task.parts["mae3d"].encoder is task.encoder


def test_pixel_shuffle_target_is_the_flipped_input():
    from volssl.tasks.pixel_shuffle import PixelShuffle, genesis_corrupt

    x = batch(n=4)["x"]
    cfg = PixelShuffle.Config(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)
    inp, tgt = genesis_corrupt(x, torch.Generator().manual_seed(0), cfg)
    assert torch.equal(inp, x) and torch.equal(tgt, x)
    cfg = PixelShuffle.Config(flip_rate=1.0, local_rate=1.0, max_block=(3, 3, 3), num_blocks=100)
    inp, tgt = genesis_corrupt(x, torch.Generator().manual_seed(0), cfg)
    assert not torch.equal(tgt, x)  # flipped (three flips at rate 1: some axis has odd parity or not)
    assert torch.equal(tgt.flatten(1).sort().values, x.flatten(1).sort().values)


def test_engine_fit_runs_a_volume_task(tmp_path):
    from pretext.config import TrainConfig
    from pretext.engine import fit

    class Tiny(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return {"x": batch(n=1, seed=i)["x"][0], "label": torch.tensor(0), "patient": torch.tensor(i),
                    "index": torch.tensor(i)}

    task = make("rotation")
    res = fit(task, Tiny(), TrainConfig(steps=3, batch_size=2, precision="32", progress=False, log_every=1,
                                        warmup_steps=1), out_dir=str(tmp_path / "run"),
              run_config={"task": "rotation", "encoder": "resnet18_3d"})
    assert res.steps == 3 and len(res.history) >= 1
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


@pytest.mark.data
def test_one_step_of_every_task_on_real_adrenalmnist3d(shared_data, tmp_path, monkeypatch):
    from pretext.data import load_data

    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    data = load_data(f"medmnist3d:{shared_data / 'adrenalmnist3d'}?pad_to=32")
    tr = data.splits["train"]
    x = torch.stack([tr[i]["x"] for i in (0, 1)])
    assert x.shape == (2, 1, 32, 32, 32)
    for name in shipped(TASKS, "volume"):
        task = make(name, side=32)
        type(task).check_input(task.cfg, data.input_shape)
        loss = task({"x": x}, generator=torch.Generator().manual_seed(0))["loss"]
        loss.backward()
        assert torch.isfinite(loss), name


def test_slice_order_resizes_slabs_for_fixed_size_encoders():
    task = create_task("slice_order", tiny_encoder("vit_3d", img_size=16), num_permutations=6)
    assert task.resize  # vit_3d needs its img_size: slabs are resized to it
    seen = []
    forward = task.encoder.forward_features
    task.encoder.forward_features = lambda v: seen.append(tuple(v.shape)) or forward(v)
    out = task(batch(), generator=torch.Generator().manual_seed(0))
    assert seen == [(8, 1, 16, 16, 16)] and torch.isfinite(out["loss"])


def test_sslbench_pretrain_on_a_medmnist_file(tmp_path, capsys, monkeypatch):
    """The CLI end to end: data kind + encoder + task options from flags, then a checkpoint that loads."""
    import numpy as np

    from sslbench.cli import main

    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = (rng.random((n, 16, 16, 16)) > 0.6).astype(np.uint8) * 255
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(tmp_path / "tinymnist3d.npz", **arrays)
    out = tmp_path / "run"
    rc = main(["pretrain", "--task", "combined", "--encoder", "resnet18_3d", "--data",
               f"medmnist3d:{tmp_path / 'tinymnist3d.npz'}", "--steps", "2", "--batch-size", "2", "--out", str(out),
               "--precision", "32", "--progress", "false", "--task.tasks", "rotation,slice_order",
               "--task.options", "{slice_order: {num_permutations: 4}}", "--encoder.widen_factor", "0.125"])
    assert rc == 0, capsys.readouterr()
    from pretext.engine.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert state["run_config"]["task_cfg"]["tasks"] == ["rotation", "slice_order"]
    assert state["run_config"]["encoder_cfg"]["widen_factor"] == 0.125
