"""The built-in encoders travel as MONAI bundles: real pipeline checkpoints and a set of registered encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretext.bundle import export_bundle
from pretext.bundle.verify import verify_bundle
from pretext.engine.checkpoint import save_checkpoint
from pretext.registry import ENCODERS, create_encoder

SMALL = {
    "resnet18_3d": {"widen_factor": 0.25},
    "vit_3d": {"embed_dim": 48, "depth": 1, "num_heads": 2},
    "monai_net": {"net": "ResNet", "block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 16, 32]},
    "xresnet1d18": {},
    "cpc_encoder": {},
}


@pytest.mark.parametrize("task, encoder, data, enc_cfg", [
    ("rotation", "resnet18_3d", "bundle_test_random:?n=4", {"widen_factor": 0.25}),
    ("cpc", "xresnet1d18", "bundle_test_ecg:?n=4", {}),
])
def test_pipeline_checkpoint_exports(tmp_path: Path, task: str, encoder: str, data: str, enc_cfg: dict) -> None:
    from pretext import pipeline

    assert encoder in ENCODERS, f"built-in encoder {encoder} is not registered"
    module, _, run_config = pipeline.build_run(task, encoder, data, encoder_cfg=enc_cfg)
    save_checkpoint(tmp_path / "last.ckpt", {"model": module.state_dict(), "run_config": run_config, "step": 0})
    bundle = export_bundle(tmp_path / "last.ckpt", tmp_path / "bundle")
    checks = verify_bundle(bundle)
    assert set(checks) == {"verify_metadata", "verify_net_in_out", "config_parser", "torchscript"}
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert [image["num_channels"], *image["spatial_shape"]] == run_config["input_shape"]
    if run_config["modality"] == "signal":
        assert image["sampling_rate_hz"] == run_config["sfreq"] and image["channel_names"] == run_config["channel_names"]
        assert image["window_length_s"] == pytest.approx(2.56)
    pretrain = json.loads((bundle / "configs" / "pretrain.json").read_text())
    assert pretrain["task"]["name"] == task and pretrain["data_spec"] == run_config["data"]
    model = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(k.startswith("encoder.") for k in model)  # the pretext task's own head is not exported
    ref = {k: v for k, v in module.state_dict().items() if k.startswith("encoder.")}
    assert model.keys() == ref.keys() and all(torch.equal(model[k], ref[k]) for k in ref)
    # the engine's encoder.safetensors (run_config in its metadata) exports the same weights
    from pretext.engine.checkpoint import save_safetensors

    save_safetensors(tmp_path / "encoder.safetensors", {k[len("encoder."):]: v for k, v in ref.items()},
                     {"run_config": json.dumps(run_config)})
    again = export_bundle(tmp_path / "encoder.safetensors", tmp_path / "bundle2", torchscript=False)
    model2 = torch.load(again / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(model2[k], ref[k]) for k in ref) and not (again / "models" / "model.ts").exists()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_registered_encoder_exports_and_traces(tmp_path: Path, name: str) -> None:
    assert name in ENCODERS, f"built-in encoder {name} is not registered"
    volume = ENCODERS.meta(name).get("modality") == "volume"
    kw = {"in_channels": 1, "img_size": [16, 16, 16]} if volume else {"n_chans": 2, "n_times": 256, "sfreq": 100.0}
    kw.update(SMALL[name])
    enc = create_encoder(name, **{k: tuple(v) if k == "img_size" else v for k, v in kw.items()})
    rc = {"task": "any", "encoder": name, "encoder_cfg": kw, "data": ""}
    save_checkpoint(tmp_path / "e.ckpt", {"model": {f"encoder.{k}": v for k, v in enc.state_dict().items()}, "run_config": rc})
    checks = verify_bundle(export_bundle(tmp_path / "e.ckpt", tmp_path / "b"))
    assert checks["torchscript"].startswith("ok") and checks["verify_net_in_out"] == "ok"
