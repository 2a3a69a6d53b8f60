"""Check an exported bundle with MONAI's own tools, in-process (what ``sslbench export-bundle`` runs last)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from pretext.bundle.metadata import SCHEMA_PATH
from pretext.engine.checkpoint import torch_load_safely
from pretext.errors import UserError


def _any_size(infer: Path) -> int:
    """The size ``verify_net_in_out`` gives ``"*"`` spatial dims: a few patches' worth for a grid network
    (``network_def`` with a ``grid``: whole inputs of any size), else MONAI's default 1."""
    try:
        grid = json.loads(infer.read_text()).get("network_def", {}).get("grid")
        patch = [int(p) for p in grid["patch_size"]]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return 1
    return max(patch) + max(patch) // 2 + 1  # about 1.5 patches: two windows per axis, the last one overlapping


def verify_bundle(bundle: str | Path, device: str = "cpu") -> dict[str, str]:
    """Run MONAI's ``verify_metadata`` (offline schema), ``verify_net_in_out``, a ``ConfigParser`` build of
    ``network_def`` with a strict load of ``models/model.pt``, and the TorchScript reload check.

    Returns:
        check name -> short result, for each check that ran.

    Raises:
        UserError: a check failed (the message names it and MONAI's reason).
    """
    from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

    root = Path(bundle)
    meta_file, infer = root / "configs" / "metadata.json", root / "configs" / "inference.json"
    schema = root / "docs" / "metadata_schema.json"
    schema = schema if schema.is_file() else SCHEMA_PATH
    results: dict[str, str] = {}
    loggers = [logging.getLogger(n) for n in ("monai.bundle", "monai.bundle.scripts", "monai.apps")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                verify_metadata(meta_file=str(meta_file), filepath=str(schema))
                results["verify_metadata"] = f"ok (schema {schema.name}, offline)"
                any_size = _any_size(infer)
                verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(infer), device=device,
                                  any=any_size)
                results["verify_net_in_out"] = "ok" + (f" ('*' dims at {any_size})" if any_size > 1 else "")
            except Exception as err:  # noqa: BLE001 - MONAI raises ValueError/KeyError/RuntimeError
                failed = "verify_metadata" if "verify_metadata" not in results else "verify_net_in_out"
                raise UserError(f"bundle {str(root)!r} fails MONAI's {failed}: {err}") from err
            parser = ConfigParser()
            parser.read_config(str(infer))
            parser.read_meta(str(meta_file))
            net = parser.get_parsed_content("network_def")
            net.load_state_dict(torch_load_safely(root / "models" / "model.pt", "bundle weights",
                                                  "export the bundle again"))
            results["config_parser"] = f"ok ({type(net).__name__}, strict load of models/model.pt)"
            ts = root / "models" / "model.ts"
            if ts.is_file():
                meta = json.loads(meta_file.read_text())
                image = meta["network_data_format"]["inputs"]["image"]
                shape = [s if isinstance(s, int) else 16 for s in image["spatial_shape"]]
                x = torch.rand(2, image["num_channels"], *shape)
                scripted = torch.jit.load(str(ts), map_location="cpu")
                with torch.no_grad():
                    diff = float((scripted(x) - net.eval()(x)).abs().max())
                if not diff <= 1e-4:
                    raise UserError(f"bundle {str(root)!r}: models/model.ts differs from network_def (max |diff| {diff:.3g})")
                results["torchscript"] = f"ok (max |diff| {diff:.2g})"
    finally:
        for lg, lv in zip(loggers, levels, strict=False):
            lg.setLevel(lv)
    return results
