"""Export a medssl checkpoint as a MONAI bundle.

::

    from pretext.bundle import export_bundle
    export_bundle("runs/x/checkpoints/last.ckpt", "bundles/resnet18_rotation")

writes::

    bundles/resnet18_rotation/
      configs/metadata.json    MONAI Bundle Specification metadata with network_data_format
      configs/inference.json   network (by _target_), MONAI preprocessing, inferer, postprocessing, CSV writer
      configs/train.json       fine-tuning with MONAI's SupervisedTrainer (standard train property ids)
      configs/pretrain.json    (pretraining checkpoints) the pretext task through python -m monai.bundle run
      models/model.pt          state dict of configs' network_def
      models/model.ts          TorchScript (traced, checked by reload + equal outputs), where tracing works
      docs/README.md           pretext task, data, results, how to run
      docs/metadata_schema.json  offline schema for verify_metadata
      docs/license.txt, LICENSE

The bundle is written into a hidden temporary folder beside ``out`` and renamed to ``out``
only when complete, so an interrupted export never leaves a folder that looks like a bundle.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, cast

import torch

from pretext.atomic import atomic_dir
from pretext.bundle.configs import inference_config, io_transforms, pretrain_config, train_config
from pretext.bundle.metadata import SCHEMA_PATH, build_metadata, build_readme
from pretext.bundle.source import ExportSource, read_source
from pretext.errors import UserError

LICENSE_TEXT = """Copyright (c) medssl contributors

The code and the model weights in this bundle are licensed under the Apache License, Version 2.0
(the "License"); you may not use these files except in compliance with the License. You may obtain
a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License
is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
implied. See the License for the specific language governing permissions and limitations under the
License.

The weights were trained on the data named in configs/metadata.json ("data_source"); the terms of
that data set apply to their use as well. Research use only: this model is not a medical device.
"""


def instantiate_network(config: dict[str, Any], net_id: str = "network_def", what: str = "bundle") -> torch.nn.Module:
    """Build ``net_id`` of a bundle config with MONAI's ``ConfigParser``.

    Raises:
        UserError: MONAI cannot instantiate it (the message names the target and the cause).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    try:
        net = parser.get_parsed_content(net_id, instantiate=True)
    except Exception as err:  # noqa: BLE001 - any failure means the config does not build
        target = config.get(net_id, {}).get("_target_") if isinstance(config.get(net_id), dict) else config.get(net_id)
        cause = err.__cause__ or err
        raise UserError(
            f"MONAI's ConfigParser cannot instantiate {what} {net_id!r} (_target_={target!r}): "
            f"{type(cause).__name__}: {cause}"
        ) from err
    if not isinstance(net, torch.nn.Module):
        raise UserError(f"{what} {net_id!r} built a {type(net).__name__}, not a torch.nn.Module")
    return net


def _load_weights(net: torch.nn.Module, src: ExportSource) -> None:
    parts: list[tuple[str, Any, Any]] = [("encoder", net.encoder, src.encoder_state)]
    if src.is_classifier:
        parts.append(("head", net.head, src.head_state))
    for name, module, state in parts:
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise UserError(
                f"checkpoint {str(src.path)!r}: its {name} weights do not fit {src.encoder!r} built with "
                f"{src.encoder_kwargs}: {str(err).splitlines()[0]} ... fix the encoder options "
                "(--encoder.KW) to those used in training"
            ) from err


def example_input(src: ExportSource, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input of the network's shape, ``(B, C, D, H, W)`` or ``(B, C, T)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *src.input_shape), generator=g)


def export_torchscript(net: torch.nn.Module, x: torch.Tensor, path: Path, meta: dict[str, Any],
                       atol: float = 1e-5) -> str:
    """Trace ``net`` to TorchScript with MONAI's metadata extras; reload and compare outputs.

    Returns:
        A one-line note for the README ("model.ts: traced, max |diff| ...") or why it was skipped.
    """
    from monai.data import save_net_with_metadata

    skip = getattr(net, "torchscript_note", None)
    if skip:  # e.g. GridPooled: its patch grid depends on the input's shape
        path.unlink(missing_ok=True)
        return str(skip)
    net = net.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still MONAI's model.ts
            ref = net(x)
            traced = torch.jit.trace(net, x, check_trace=False)
        save_net_with_metadata(traced, str(path.with_suffix("")), meta_values=meta, append_timestamp=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            reloaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            got = reloaded(x)
        diff = float((got - ref).abs().max())
    except Exception as err:  # noqa: BLE001 - a network that does not trace is exported without model.ts
        path.unlink(missing_ok=True)
        return f"not exported ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    if not diff <= atol:
        path.unlink(missing_ok=True)
        return f"not exported: reloaded TorchScript differs from the network (max |diff| {diff:.3g} > {atol})"
    return f"models/model.ts, traced; reloaded output equals the network's (max |diff| {diff:.2g})"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _check_out(out: Path) -> None:
    if out.exists():
        raise UserError(f"output folder {str(out)!r} already exists; choose a new --out (bundles are never overwritten)")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"the parent of --out {str(out)!r} is a file, not a folder")


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    encoder_overrides: dict[str, Any] | None = None,
    num_classes: int | None = None,
    imaging_modality: str | None = None,
    version: str = "0.1.0",
    authors: str = "medssl contributors",
    torchscript: bool = True,
    results: dict[str, Any] | None = None,
) -> Path:
    """Write a MONAI bundle for a pretrained encoder or fine-tuned classifier checkpoint.

    Args:
        checkpoint: ``.ckpt`` with ``model`` state and ``run_config`` (``sslbench pretrain`` or the harness).
        out: the bundle folder to create; must not exist.
        encoder_overrides: encoder keyword arguments replacing the recorded ones.
        num_classes: classes of the head ``train.json`` adds to an encoder bundle (default 2).
        imaging_modality: DICOM-style modality of the input ("CT", "MR", "EKG", "EEG"); guessed from the data
            spec. Not the modality adapter (``volume``/``signal``), which the checkpoint records.
        version: bundle version.
        authors: metadata ``authors``.
        torchscript: also write ``models/model.ts`` (checked by reload and equal outputs).
        results: downstream metrics (name -> value) for the README and ``eval_metrics``.

    Returns:
        The bundle folder.

    Raises:
        UserError: the output folder exists, the checkpoint has no run_config, MONAI cannot build
            the network, or the weights do not fit it.
    """
    out = Path(out)
    _check_out(out)
    src = read_source(checkpoint, encoder_overrides)
    src.results.update(results or {})
    infer = inference_config(src)
    net = instantiate_network(infer, what=f"network of {str(src.path)!r}")
    _load_weights(net, src)
    net.eval()
    x = example_input(src)
    with torch.no_grad():
        y = net(x)
    src.num_features = int(cast(Any, net).num_features)
    expect = src.num_classes if src.is_classifier else src.num_features
    if tuple(y.shape) != (x.shape[0], expect):
        raise UserError(f"network {src.encoder!r} returned shape {tuple(y.shape)} for input {tuple(x.shape)}; "
                        f"expected {(x.shape[0], expect)}")
    _, description = io_transforms(src)

    try:
        with atomic_dir(out, overwrite=False) as tmp:  # a killed or failed export leaves no partial bundle
            files: dict[str, str] = {}
            (tmp / "models").mkdir()
            torch.save(net.state_dict(), tmp / "models" / "model.pt")
            files["model.pt"] = "state dict of network_def (configs/inference.json)"
            meta = build_metadata(src, description, version=version, authors=authors,
                                  imaging_modality=imaging_modality)
            note = "not requested"
            if torchscript:
                note = export_torchscript(net, x, tmp / "models" / "model.ts", meta)
                if (tmp / "models" / "model.ts").exists():
                    files["model.ts"] = "TorchScript (traced) with metadata.json in its extras"
            _write_json(tmp / "configs" / "inference.json", infer)
            _write_json(tmp / "configs" / "train.json", train_config(src, num_classes=num_classes))
            pre = pretrain_config(src)
            if pre is not None:
                _write_json(tmp / "configs" / "pretrain.json", pre)
            meta["exported_files"] = files
            _write_json(tmp / "configs" / "metadata.json", meta)
            (tmp / "docs").mkdir()
            (tmp / "docs" / "README.md").write_text(build_readme(src, meta, pre is not None, note), encoding="utf-8")
            shutil.copyfile(SCHEMA_PATH, tmp / "docs" / "metadata_schema.json")
            (tmp / "docs" / "license.txt").write_text(LICENSE_TEXT, encoding="utf-8")
            (tmp / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
    except FileExistsError as err:
        raise UserError(f"cannot move the finished bundle to {str(out)!r}: it exists now (bundles are never "
                        "overwritten); choose a new --out") from err
    return out
