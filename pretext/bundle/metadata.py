"""``configs/metadata.json`` and ``docs/README.md`` of an exported bundle.

``metadata.json`` follows MONAI's Bundle Specification; the schema it names is the one MONAI's
model zoo uses. :data:`SCHEMA_PATH` is an offline schema written from the specification, so
``python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath SCHEMA_PATH``
runs without internet (MONAI skips the download when ``filepath`` exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretext.bundle.source import ExportSource
from pretext.modality import get_modality

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "metadata_schema.json"
MIN_PACKAGES = {"nibabel": "5.0.0", "pytorch-ignite": "0.4.11", "fire": "0.5.0"}

#: data-kind name fragments -> DICOM-style (imaging) modality of the bundle input
_MODALITY_HINTS = {"adrenal": "CT", "organ": "CT", "nodule": "CT", "fracture": "CT", "vessel": "MR", "synapse": "EM",
                   "brats": "MR", "mri": "MR", "ct": "CT", "ecg": "EKG", "physionet2017": "EKG", "cinc": "EKG",
                   "ptbxl": "EKG", "eeg": "EEG", "eegmat": "EEG", "sleep": "EEG"}


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - optional package not installed
        return ""


def guess_imaging_modality(src: ExportSource) -> str:
    """DICOM-style modality of the input ("CT", "MR", "EKG", "EEG"), or "n/a" when the data does not say."""
    recorded = src.run_config.get("imaging_modality")  # run_config["modality"] is "volume"/"signal"
    if recorded:
        return str(recorded)
    data = str(src.run_config.get("data", "")).lower()
    for hint, imaging in _MODALITY_HINTS.items():
        if hint in data:
            return imaging
    return "n/a"


def output_spec(src: ExportSource) -> dict[str, Any]:
    """``network_data_format.outputs.pred``: class logits (probabilities after postprocessing) or features."""
    if src.is_classifier:
        k = int(src.num_classes or 0)
        return {
            "type": "probabilities", "format": "classes", "num_channels": k, "spatial_shape": [], "dtype": "float32",
            "value_range": [0, 1], "is_patch_data": False,
            "channel_def": {str(i): name for i, name in enumerate(src.class_names[:k])},
            "description": "the network returns logits; inference.json applies "
                           + ("sigmoid (multi-label)" if src.multilabel else "softmax") + " to give probabilities",
        }
    f = int(src.num_features)
    return {
        "type": "latent", "format": "latent", "num_channels": f, "spatial_shape": [], "dtype": "float32",
        "value_range": [], "is_patch_data": False,
        "channel_def": {"0": f"pooled encoder features, channels 0..{f - 1} (forward_features of {src.encoder})"},
    }


def input_spec(src: ExportSource, imaging_modality: str, description: dict[str, Any]) -> dict[str, Any]:
    """``network_data_format.inputs.image`` (the modality adapter's)."""
    return get_modality(src.modality).bundle_input_spec(src, imaging_modality, description)


def build_metadata(src: ExportSource, description: dict[str, Any], *, version: str = "0.1.0",
                   authors: str = "medssl contributors", copyright: str = "Copyright (c) medssl contributors",
                   imaging_modality: str | None = None, exported: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``metadata.json`` dictionary (MONAI Bundle Specification keys plus medssl provenance)."""
    imaging_modality = imaging_modality or guess_imaging_modality(src)
    rc = src.run_config
    what = f"{src.num_classes}-class classifier" if src.is_classifier else "pretrained encoder"
    # what running the configs needs: ignite (engines, handlers), fire (python -m monai.bundle), nibabel (NIfTI)
    packages = {k: _version(k) or minimum for k, minimum in MIN_PACKAGES.items()}
    task = rc.get("task")
    grid = get_modality(src.modality).bundle_grid(src)  # a patch-trained encoder's sliding grid, or None
    meta: dict[str, Any] = {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: "exported by sslbench export-bundle"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        # MONAI >= 1.4 reads "optional_packages_version" (the specification's name) as the deprecated
        # alias of "required_packages_version": both are written, with the same content.
        "required_packages_version": packages,
        "optional_packages_version": dict(packages),
        "medssl_version": _version("medssl") or "0.1.0",
        "name": f"medssl {src.encoder} {what}",
        "task": f"{src.modality} {what} ({src.encoder})" + (f" self-supervised with pretext task {task!r}" if task else ""),
        "description": (
            f"A {src.encoder} {src.modality} encoder from medssl"
            + (f", pretrained with the self-supervised pretext task {task!r}" if task else "")
            + (f" and fine-tuned as a {src.num_classes}-class classifier" if src.is_classifier else "")
            + (f". Input {list(src.input_shape)} (channels first)." if grid is None else
               f". Input: whole inputs of any size with {src.input_shape[0]} channel(s) (channels first); the network "
               f"encodes their sliding grid of {list(grid['patch_size'])} patches (overlap {grid.get('overlap', 0.25):g}) "
               f"and {grid.get('pool', 'mean')}-pools the patch features.")
        ),
        "authors": authors,
        "copyright": copyright,
        "intended_use": "Research only: feature extraction and fine-tuning for downstream tasks; not for diagnostic use.",
        "data_source": str(rc.get("data") or "unknown"),
        "data_type": get_modality(src.modality).bundle_data_type,
        "references": ["medssl: self-supervised learning for 3D medical volumes and physiological signals"],
        "pretext_task": {"name": task, "config": rc.get("task_cfg") or {}} if task else None,
        "encoder": {"name": src.encoder, "kwargs": _plain(src.encoder_kwargs), "num_features": src.num_features},
        "training": {k: v for k, v in {"train": rc.get("train"), "steps": src.step,
                                       "pretext_summary": src.pretraining or None}.items() if v is not None},
        "exported_files": exported or {},
        "network_data_format": {
            "inputs": {"image": input_spec(src, imaging_modality, description)},
            "outputs": {"pred": output_spec(src)},
        },
    }
    if src.results:
        meta["eval_metrics"] = _plain(src.results)
    return {k: v for k, v in meta.items() if v is not None}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def build_readme(src: ExportSource, meta: dict[str, Any], has_pretrain: bool, torchscript_note: str) -> str:
    """``docs/README.md``: what the model is, how it was made, how to run it."""
    rc = src.run_config
    nd = meta["network_data_format"]
    inp, out = nd["inputs"]["image"], nd["outputs"]["pred"]
    lines = [
        f"# {meta['name']}", "", meta["description"], "",
        "## Model", "",
        f"- encoder: `{src.encoder}` with `{_plain(src.encoder_kwargs)}`, {meta['encoder']['num_features']} pooled features",
        f"- head: `{src.head}` -> {src.num_classes} classes ({', '.join(src.class_names)})" if src.is_classifier
        else "- head: none (the network returns pooled features `(B, F)`)",
        f"- input `image`: {inp['num_channels']} channel(s), shape {inp['spatial_shape']}, {inp['dtype']}, "
        f"value range {inp['value_range'] or 'unbounded'}; modality {inp.get('modality', 'n/a')}",
        f"- output `pred`: {out['num_channels']} channels, {out['type']} ({out['format']})",
        f"- TorchScript: {torchscript_note}", "",
        "## How it was made", "",
        f"- pretext task: `{rc.get('task')}` with `{rc.get('task_cfg') or {}}`" if rc.get("task") else "- pretext task: none recorded",
        f"- data: `{rc.get('data', 'unknown')}`",
        f"- training: `{rc.get('train') or {}}`" + (f", {src.step} steps" if src.step else ""),
        f"- source checkpoint: `{src.path.name}`", "",
        "## Results", "",
    ]
    if src.pretraining:
        lines += ["Pretext task (training objective, from the run's summary.json):", "",
                  "| quantity | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in src.pretraining.items()]
        lines.append("")
    if src.results:
        lines += ["Downstream:", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in _plain(src.results).items()]
    else:
        lines.append("No downstream results were recorded; evaluate with `sslbench evaluate` before use "
                     "(attach them with `sslbench export-bundle --results results.json`).")
    lines += [
        "", "## Use", "",
        "Inference on every image file in a folder (writes a CSV per run to `eval/`):", "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\",
        "    --bundle_root . --dataset_dir /path/to/images",
        "```", "",
        "Fine-tuning with MONAI's SupervisedTrainer: put a datalist `dataset.json` "
        "(`{\"training\": [{\"image\": \"a.nii.gz\", \"label\": 0}, ...]}`) in the data folder, then:", "",
        "```bash",
        "python -m monai.bundle run --config_file configs/train.json --meta_file configs/metadata.json \\",
        "    --bundle_root . --dataset_dir /path/to/data --max_epochs 10" + ("" if src.is_classifier else " --num_classes 2"),
        "```", "",
    ]
    if has_pretrain:
        lines += [
            "Rerun the self-supervised pretraining on new data (medssl installed):", "",
            "```bash",
            "python -m monai.bundle run --config_file configs/pretrain.json --bundle_root . \\",
            "    --data_spec KIND:PATH --steps 1000",
            "```", "",
        ]
    lines += [
        "Verify the bundle offline:", "",
        "```bash",
        "python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath docs/metadata_schema.json",
        "python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json --config_file configs/inference.json"
        + (" --any 32" if "*" in inp["spatial_shape"] else ""),  # "*" dims (whole inputs of any size): 32 voxels
        "```", "",
        "Load the weights as a medssl encoder for fine-tuning: `sslbench import-bundle --bundle . --out encoder.ckpt` "
        "(Python: `pretext.bundle.encoder_from_bundle(\".\")`).", "",
        "## License", "", "See `LICENSE` (also `docs/license.txt`). Research use only; not a medical device.", "",
    ]
    return "\n".join(lines)
