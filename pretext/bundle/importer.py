"""Import a MONAI bundle's weights as one of our encoders, with a report of what matched.

A model-zoo style bundle has ``configs/{inference,train}.json`` whose ``network_def`` builds the
network (by ``_target_``) and ``models/model.pt`` with its state dict. :func:`encoder_from_bundle`
builds a medssl encoder for it and copies every weight whose name (after removing/adding a common
prefix such as ``module.`` or ``net.``) and shape match:

* our own bundles (``pretext.bundle.networks.build_network``) give back the same registered encoder;
* a ``monai.networks.nets`` class (``DenseNet121``, ``ResNet``, ...) becomes ``monai_net`` with the
  same constructor arguments (its classifier layer is reported as unexpected: we keep the trunk);
* anything else loads into the encoder you name (``encoder=``, ``encoder_kwargs=``).

:func:`import_bundle` writes the result as a checkpoint our fine-tuning harness reads
(``sslbench.pretrained.read_checkpoint``), with the report in its ``run_config``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from pretext.engine.checkpoint import torch_load_safely
from pretext.errors import ConfigError, DataError, UserError
from pretext.modality import modality_of_shape
from pretext.registry import create_encoder

CONFIG_NAMES = ("inference.json", "train.json", "inference.yaml", "train.yaml")
_PREFIXES = ("", "module.", "model.", "network.", "net.", "encoder.", "backbone.", "trunk.", "features.")
_SIZING = {"spatial_dims", "in_channels", "n_input_channels", "in_chans", "img_size", "spatial_size", "roi_size"}


@dataclasses.dataclass
class ImportReport:
    """Which weights of a bundle went where.

    Attributes:
        matched: encoder keys loaded from the bundle.
        missing: encoder keys the bundle has no weight for (left at their initial values).
        unexpected: bundle keys not used by the encoder.
        shape_mismatch: ``(encoder key, bundle shape, encoder shape)`` for same-named keys of another shape.
        strip, add: the prefix removed from bundle keys and the one added to fit the encoder's names.
    """

    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    shape_mismatch: list[tuple[str, list[int], list[int]]]
    strip: str = ""
    add: str = ""

    def summary(self) -> str:
        lines = [f"matched {len(self.matched)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                 f"shape mismatch {len(self.shape_mismatch)}"
                 + (f" (bundle prefix {self.strip!r} -> encoder prefix {self.add!r})" if self.strip or self.add else "")]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                lines.append(f"  {title}: {', '.join(items[:8])}" + (f" ... (+{len(items) - 8})" if len(items) > 8 else ""))
        for key, a, b in self.shape_mismatch[:8]:
            lines.append(f"  shape mismatch: {key} bundle {a} vs encoder {b}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_bundle(bundle: str | Path, config: str | None = None, net_id: str = "network_def") -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """The bundle's config (the one holding ``net_id``), metadata and ``models/model.pt`` state dict.

    Raises:
        DataError: a missing folder, config or weights file, or weights that do not load safely.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle)
    if not root.is_dir():
        raise DataError(f"bundle folder {str(root)!r} does not exist")
    names = [config] if config else list(CONFIG_NAMES)
    cfg: dict[str, Any] | None = None
    for name in names:
        path = root / "configs" / name
        if path.is_file():
            try:
                loaded = ConfigParser.load_config_file(str(path))
            except ValueError as err:  # json.JSONDecodeError, yaml errors
                raise DataError(f"bundle config {str(path)!r} cannot be read ({_first_line(err)}); fix the file or "
                                "download the bundle again") from None
            if net_id in loaded:
                cfg = loaded
                break
    if cfg is None:
        raise DataError(f"bundle {str(root)!r} has no configs/{' or configs/'.join(names)} defining {net_id!r}; "
                        "pass --config and --net-id naming the network's config and id")
    meta = read_metadata(root / "configs" / "metadata.json")
    weights = root / "models" / "model.pt"
    if not weights.is_file():
        raise DataError(f"bundle {str(root)!r} has no models/model.pt; download the bundle's weights first")
    state = torch_load_safely(weights, "bundle weights", "it may be truncated, damaged or not a state dict of "
                              "tensors: download the bundle's weights again")
    for key in ("model", "state_dict", "network"):  # nested checkpoints (CheckpointSaver's {"model": ...})
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{str(weights)!r} is not a state dict of tensors")
    return cfg, meta, state


def read_metadata(path: Path) -> dict[str, Any]:
    """A bundle's ``configs/metadata.json`` (``{}`` when absent).

    Raises:
        DataError: the file is not JSON, or not a JSON object (named, with line and column).
    """
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        raise DataError(f"bundle metadata {str(path)!r} is not valid JSON (line {err.lineno}, column {err.colno}: "
                        f"{err.msg}); fix the file or download the bundle again") from None
    if not isinstance(meta, dict):
        raise DataError(f"bundle metadata {str(path)!r} must hold a JSON object, got {type(meta).__name__}")
    return meta


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__


def _input_shape(meta: dict[str, Any]) -> tuple[int | None, list[int] | None]:
    image = meta.get("network_data_format", {}).get("inputs", {}).get("image", {})
    shape = image.get("spatial_shape")
    fixed = [int(s) for s in shape] if shape and all(isinstance(s, int) for s in shape) else None
    return image.get("num_channels"), fixed


def encoder_spec(cfg: dict[str, Any], meta: dict[str, Any], net_id: str = "network_def") -> tuple[str, dict[str, Any]]:
    """The registered encoder (name, kwargs) that fits a bundle's ``network_def``.

    Raises:
        UserError: the network is neither ours nor a ``monai.networks.nets`` class.
    """
    item = cfg[net_id]
    target = str(item.get("_target_", "")) if isinstance(item, dict) else ""
    if target.endswith("build_network") and "encoder" in item:
        return str(item["encoder"]), dict(item.get("encoder_kwargs") or {})
    cls_name = target.rsplit(".", 1)[-1]
    import monai.networks.nets as nets

    if target and isinstance(getattr(nets, cls_name, None), type) and (target == cls_name or target.startswith("monai.")):
        kwargs = {k: v for k, v in item.items() if not k.startswith("_") and k not in _SIZING}
        if any(isinstance(v, str) and (v.startswith("@") or v.startswith("$")) for v in kwargs.values()):
            raise UserError(f"network_def {target} uses references/expressions {kwargs}; pass --encoder/--encoder.KW")
        channels, spatial = _input_shape(meta)
        for key in ("in_channels", "n_input_channels", "in_chans"):
            if key in item and not isinstance(item[key], str):
                channels = item[key]
        sized: dict[str, Any] = {"net": cls_name, **kwargs}
        if channels:
            sized["in_channels"] = int(channels)
        if spatial:
            sized["img_size"] = spatial
        return "monai_net", sized
    raise UserError(f"cannot map bundle network {target or item!r} to a registered encoder; "
                    "pass encoder= (--encoder NAME --encoder.KW VALUE) to choose the encoder to load its weights into")


def _unique_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases (a submodule registered twice keeps its first name)."""
    seen: set[int] = set()
    out = {}
    for k, v in module.state_dict(keep_vars=True).items():
        if id(v) not in seen:
            seen.add(id(v))
            out[k] = v
    return out


def load_matching(encoder: nn.Module, state: dict[str, torch.Tensor]) -> ImportReport:
    """Copy the bundle weights that fit ``encoder`` (best prefix mapping) and report the rest."""
    target = _unique_state(encoder)
    best: tuple[int, str, str] = (-1, "", "")
    for strip in _PREFIXES:
        if strip and not any(k.startswith(strip) for k in state):
            continue
        for add in _PREFIXES:
            n = sum(1 for k, v in state.items() if k.startswith(strip)
                    and add + k[len(strip):] in target and tuple(target[add + k[len(strip):]].shape) == tuple(v.shape))
            if n > best[0]:
                best = (n, strip, add)
    _, strip, add = best
    matched, mismatch, used = [], [], set()
    with torch.no_grad():
        for k, v in state.items():
            if not k.startswith(strip):
                continue
            name = add + k[len(strip):]
            if name not in target:
                continue
            if tuple(target[name].shape) != tuple(v.shape):
                mismatch.append((name, list(v.shape), list(target[name].shape)))
                continue
            target[name].copy_(v.to(target[name].dtype))
            matched.append(name)
            used.add(k)
    missing = [k for k in target if k not in set(matched) and k not in {m[0] for m in mismatch}]
    unexpected = [k for k in state if k not in used]
    return ImportReport(matched, missing, unexpected, mismatch, strip, add)


def encoder_from_bundle(bundle: str | Path, encoder: str | None = None, encoder_kwargs: dict[str, Any] | None = None,
                        config: str | None = None, net_id: str = "network_def",
                        ) -> tuple[nn.Module, ImportReport, dict[str, Any]]:
    """Build an encoder for a bundle's network and load the bundle's weights into it.

    Args:
        bundle: bundle folder (``configs/``, ``models/model.pt``).
        encoder: registered encoder to load into; default: derived from ``network_def``.
        encoder_kwargs: its keyword arguments (added to / replacing the derived ones).
        config: config file name under ``configs/`` (default: inference.json, then train.json).
        net_id: id of the network in the config.

    Returns:
        ``(encoder, report, run_config)``; ``run_config`` names the encoder and its kwargs.

    Raises:
        UserError: nothing of the bundle fits the encoder, or the bundle cannot be read.
    """
    cfg, meta, state = read_bundle(bundle, config, net_id)
    name, kwargs = (encoder, {}) if encoder else encoder_spec(cfg, meta, net_id)
    kwargs.update(encoder_kwargs or {})
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        enc = create_encoder(name, **kwargs)
    except (ConfigError, TypeError, ValueError) as err:
        raise UserError(f"cannot build encoder {name!r} with {kwargs} for bundle {str(bundle)!r}: {err}") from err
    report = load_matching(enc, state)
    if not report.matched:
        raise UserError(f"no weight of bundle {str(bundle)!r} fits encoder {name!r}:\n{report.summary()}\n"
                        "pick the encoder (and options) the bundle's network was built with")
    channels, spatial = _input_shape(meta)
    run_config: dict[str, Any] = {
        "task": f"imported:{Path(bundle).resolve().name}",
        "task_cfg": {},
        "encoder": name,
        "encoder_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        "data": str(meta.get("data_source", "")),
        "modality": modality_of_shape(cast("list[int]", [channels, *(spatial or (0, 0, 0))])),
        "source_bundle": str(Path(bundle).resolve()),
        "bundle_version": str(meta.get("version", "")),
        "import_report": report.to_dict(),
    }
    if channels and spatial:
        run_config["input_shape"] = [int(channels), *spatial]
    return enc, report, run_config


def import_bundle(bundle: str | Path, out: str | Path, **kwargs: Any) -> ImportReport:
    """Write ``out`` (a ``.ckpt`` for fine-tuning) and ``encoder.safetensors`` beside it from a bundle.

    Keyword arguments go to :func:`encoder_from_bundle`.

    Raises:
        UserError: ``out`` exists, or the bundle does not fit (see :func:`encoder_from_bundle`).
    """
    from pretext.engine.checkpoint import save_checkpoint, save_safetensors

    out = Path(out)
    if out.exists():
        raise UserError(f"output checkpoint {str(out)!r} already exists; choose a new --out")
    enc, report, run_config = encoder_from_bundle(bundle, **kwargs)
    state = {f"encoder.{k}": v.detach().clone() for k, v in enc.state_dict().items()}
    save_checkpoint(out, {"model": state, "run_config": run_config, "step": 0})
    safetensors = out.with_name("encoder.safetensors") if out.suffix == ".ckpt" else out.with_suffix(".safetensors")
    save_safetensors(safetensors, {k[len("encoder."):]: v for k, v in state.items()},
                     {"run_config": json.dumps(run_config, default=str)})
    return report
