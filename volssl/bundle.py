"""MONAI bundles of volume (CT/MRI) models: what differs from signals.

The input ``image`` of a volume bundle is a NIfTI/NRRD/MHA file, loaded channels-first and prepared as the
training data were (orientation, spacing, CT window or intensity normalisation, foreground crop, the
network's input size), read back from the run's data spec. The modality-agnostic bundle writer is
:mod:`pretext.bundle`; it reaches these functions through :data:`volssl.modality.ADAPTER`.

For ``nifti``/``manifest3d``/``dicom`` data the preprocessing in ``inference.json`` is the ingest's own chain,
unchanged (:func:`volssl.preprocess.preprocess_chain`: orientation, resampling to ``?spacing=`` with
:class:`volssl.preprocess.Resampled`, window / normalisation, foreground crop, ``?size=``), so a bundle sees the
voxels the model was trained on. A model trained on patches of whole scans (data spec ``?patch=D,H,W``) keeps
the whole scan (no resize to the patch), and the network (:func:`volume_grid` -> :class:`pretext.bundle.networks.GridPooled`) encodes the sliding
grid of ``?patch=`` patches (``?overlap=``) and pools their features (``?pool=``), as the harness's
whole-scan features (:mod:`sslbench.pooled`) do.
"""

from __future__ import annotations

from typing import Any

from pretext.bundle.source import ExportSource

__all__ = ["normalize_transform", "volume_grid", "volume_input_spec", "volume_preprocessing", "volume_transforms"]

#: patches encoded per forward pass of a grid network (``--network_def#grid#sw_batch_size N`` overrides it)
SW_BATCH_SIZE = 8
#: data kinds whose volumes went through :func:`volssl.preprocess.preprocess_chain`
CHAIN_KINDS = ("nifti", "manifest3d", "dicom")


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None or value == "none":
        return None
    parts = [p for p in str(value).strip("()[] ").split(",") if p.strip()] if isinstance(value, str) else list(value)
    return (float(parts[0]), float(parts[1])) if len(parts) == 2 else None


def volume_preprocessing(src: ExportSource) -> dict[str, Any]:
    """How training volumes were prepared, read from the data spec (``KIND:PATH?options``) of the run.

    * ``medmnist3d``: ``normalize=unit`` (default) is uint8 / 255 -> [0, 1]; ``zscore`` used train-split
      statistics (per-volume z-score at inference); ``none`` keeps 0..255.
    * ``nifti`` / ``manifest3d``: the :class:`volssl.preprocess.PreprocessConfig` options (orientation,
      spacing, CT window, percentile/min-max/z-score normalisation, foreground crop, size / resize).
    * anything else: per-volume min-max to [0, 1].

    ``run_config["normalization"]`` (a dict with ``kind``) overrides the intensity part.
    """
    from pretext.data import parse_spec

    spec = str(src.run_config.get("data") or "")
    kind, options = "", {}
    if ":" in spec:
        try:
            kind, _, options = parse_spec(spec)
        except Exception:  # noqa: BLE001 - an odd spec only loses the description
            kind, options = "", {}
    pre: dict[str, Any] = {"data_kind": kind or "unknown", "resize": True}
    if options.get("patch") not in (None, "", "none"):  # whole scans: the network pools a grid of patches
        from volssl.sampling import patch_config

        cfg = patch_config(options["patch"], pool=options.get("pool", "mean"), overlap=options.get("overlap", 0.25),
                           roi_size=options.get("roi_size"))
        assert cfg is not None
        pre["grid"] = {"patch_size": list(cfg.patch), "overlap": cfg.overlap, "pool": cfg.pool}
        if options.get("roi_size") is not None or str(options.get("roi", "auto")) not in ("auto", "none"):
            pre["grid_note"] = "ROI centres of the manifest are not applied: the grid covers the whole volume"
    if kind == "medmnist3d":
        mode = str(options.get("normalize", "unit"))
        pre["normalization"] = {
            "unit": {"kind": "range", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0, "clip": False},
            "zscore": {"kind": "zscore", "note": "training used train-split mean/std; inference z-scores each volume"},
        }.get(mode, {"kind": "none"})
    elif kind in CHAIN_KINDS:
        from volssl.preprocess import prep_config, preprocess_chain

        prep = prep_config(options)
        pre["chain"] = preprocess_chain(prep, ("image",))
        pre["size"] = list(prep.size) if prep.size else None
        window = _pair(options.get("window"))
        mode = str(options.get("normalize", "auto"))
        mode = ("none" if window else "percentile") if mode == "auto" else mode
        lo, hi = _pair(options.get("percentiles")) or (0.5, 99.5)
        pre["window"] = list(window) if window else None
        pre["normalization"] = {"minmax": {"kind": "minmax", "min": 0.0, "max": 1.0},
                                "percentile": {"kind": "percentile", "lower": lo, "upper": hi},
                                "zscore": {"kind": "zscore", "nonzero": True}}.get(mode, {"kind": "none"})
        if window and mode == "none":
            pre["normalization"] = {"kind": "range", "a_min": window[0], "a_max": window[1], "b_min": 0.0, "b_max": 1.0,
                                    "clip": True}
            pre["window"] = None
        pre["orientation"] = options.get("orientation", "RAS") or None
        pre["spacing"] = float(options["spacing"]) if options.get("spacing") not in (None, "none") else None
        if options.get("foreground_crop"):
            pre["foreground_crop"] = {"threshold": float(options.get("foreground_threshold", 0.0)),
                                      "margin": int(options.get("foreground_margin", 2))}
        pre["resize"] = bool(options.get("resize", False))
    else:
        pre["normalization"] = {"kind": "minmax", "min": 0.0, "max": 1.0}
    recorded = src.run_config.get("normalization")
    if isinstance(recorded, dict) and recorded.get("kind") and "chain" not in pre:
        pre["normalization"] = dict(recorded)
    return pre


def normalize_transform(norm: dict[str, Any], channel_wise: bool = True) -> dict[str, Any] | None:
    kind = norm["kind"]
    if kind == "none":
        return None
    if kind == "minmax":
        return {"_target_": "ScaleIntensityd", "keys": "image", "minv": norm.get("min", 0.0), "maxv": norm.get("max", 1.0),
                "channel_wise": channel_wise}
    if kind == "range":
        return {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": norm["a_min"], "a_max": norm["a_max"],
                "b_min": norm.get("b_min", 0.0), "b_max": norm.get("b_max", 1.0), "clip": bool(norm.get("clip", True))}
    if kind == "percentile":
        return {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": norm["lower"],
                "upper": norm["upper"], "b_min": 0.0, "b_max": 1.0, "clip": True, "channel_wise": channel_wise}
    if kind == "zscore":
        return {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": bool(norm.get("nonzero", False)),
                "channel_wise": channel_wise}
    raise ValueError(f"normalization kind {kind!r} is not one of none, minmax, range, percentile, zscore")


def volume_transforms(src: ExportSource) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """NIfTI/NRRD/... -> ``(C, D, H, W)`` float32 prepared as in training: the ingest's chain unchanged (or the
    MedMNIST scaling), then brought to the network's input size (a patch-trained model: the whole scan)."""
    pre = volume_preprocessing(src)
    spatial = list(src.input_shape[1:])
    xforms: list[dict[str, Any] | None] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, "ensure_channel_first": True},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    ]
    if "chain" in pre:
        xforms += pre["chain"]
    else:
        xforms.append(normalize_transform(pre["normalization"]))
    if "grid" not in pre and not pre.get("size"):  # one shape for the network (the chain has ?size= if given)
        xforms.append({"_target_": "Resized", "keys": "image", "spatial_size": spatial, "mode": "trilinear"}
                      if pre["resize"] else {"_target_": "ResizeWithPadOrCropd", "keys": "image", "spatial_size": spatial})
    return [x for x in xforms if x is not None], {"normalization": pre["normalization"], "preprocessing": pre}


def volume_grid(src: ExportSource) -> dict[str, Any] | None:
    """The :class:`pretext.bundle.networks.GridPooled` options of a model trained with ``?patch=``, else None."""
    grid = volume_preprocessing(src).get("grid")
    return None if grid is None else {**grid, "sw_batch_size": SW_BATCH_SIZE}


def volume_input_spec(src: ExportSource, imaging_modality: str, description: dict[str, Any]) -> dict[str, Any]:
    """``network_data_format.inputs.image`` of a volume bundle (MONAI type "image")."""
    norm = description["normalization"]
    pre = description.get("preprocessing", {})
    value_range: list[float] = []
    if norm["kind"] == "minmax":
        value_range = [norm.get("min", 0.0), norm.get("max", 1.0)]
    elif norm["kind"] in ("range", "percentile"):
        value_range = [norm.get("b_min", 0.0), norm.get("b_max", 1.0)]
    steps = ["LoadImaged(ensure_channel_first)", "EnsureTyped(float32)"]
    steps += [f"Orientationd({pre['orientation']})"] if pre.get("orientation") else []
    grid = pre.get("grid")
    steps += [f"Resampled({pre['spacing']} mm)"] if pre.get("spacing") else []
    steps += [f"HU window {pre['window']} -> [0, 1]"] if pre.get("window") else []
    steps += [f"intensity {norm['kind']}"] if norm["kind"] != "none" else []
    steps += ["CropForegroundd"] if pre.get("foreground_crop") else []
    spatial_shape: list[Any] = list(src.input_shape[1:])
    if grid is None:
        steps += [("Resized" if pre.get("resize", True) else "ResizeWithPadOrCropd") + f"({spatial_shape})"]
    else:  # the network takes the whole volume, of any shape
        steps += [("Resized" if pre.get("resize") else "ResizeWithPadOrCropd") + f"({pre['size']})"] if pre.get("size") else []
        steps += [f"whole volume, no resize; the network (GridPooled) tiles it with a sliding grid of {grid['patch_size']} "
                  f"patches (overlap {grid['overlap']:g}; a volume smaller than the patch is centred and zero-padded), "
                  f"encodes them and {grid['pool']}-pools the patch features"
                  + ("; " + pre["grid_note"] if pre.get("grid_note") else "")]
        spatial_shape = ["*"] * len(spatial_shape)
    return {
        "type": "image", "format": "hounsfield" if norm["kind"] == "range" and norm.get("a_min", 0) < 0 else "magnitude",
        "modality": imaging_modality, "num_channels": int(src.input_shape[0]), "spatial_shape": spatial_shape,
        "dtype": "float32", "value_range": value_range, "is_patch_data": False,
        "channel_def": {str(i): "image" if src.input_shape[0] == 1 else f"image channel {i}" for i in range(src.input_shape[0])},
        "intensity_normalization": norm,
        **({"patch_grid": dict(grid)} if grid else {}),
        "preprocessing": " -> ".join(steps) + f" (from data {pre.get('data_kind', 'unknown')!r}; see configs/inference.json)",
    }
