"""The JSON configs of an exported bundle: ``inference.json``, ``train.json``, ``pretrain.json``.

Every component is named by ``_target_`` (MONAI transforms, engines, handlers, and our
:func:`volssl.bundle.networks.build_network`), so MONAI's ``ConfigParser`` builds them and
``python -m monai.bundle run`` runs them. ``train.json`` uses MONAI's standard train property
ids (``bundle_root``, ``device``, ``dataset_dir``, ``network_def``, ``train#dataset``,
``train#trainer``, ``train#trainer#max_epochs``, ``train#inferer``, ``train#handlers``,
``train#preprocessing``, ``train#postprocessing``, ``train#key_metric``), so
``ConfigWorkflow(workflow_type="train").check_properties()`` finds them all.
"""

from __future__ import annotations

from typing import Any

from volssl.bundle.source import ExportSource

DEVICE = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"


def network_def(src: ExportSource, head: str | None, num_classes: Any = None) -> dict[str, Any]:
    """``network_def`` item: our factory over the encoder registry."""
    item: dict[str, Any] = {
        "_target_": "volssl.bundle.networks.build_network",
        "encoder": src.encoder,
        "encoder_kwargs": _jsonable(src.encoder_kwargs),
    }
    if head is not None:
        item.update(head=head, num_classes=num_classes)
        if src.head_kwargs and head == src.head:
            item["head_kwargs"] = _jsonable(src.head_kwargs)
    if src.modules:
        item["modules"] = list(src.modules)
    return item


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def io_transforms(src: ExportSource) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load + normalise + size transforms for key ``"image"``, and a description of them."""
    if src.modality == "signal":
        from signalssl.bundle import signal_transforms

        return signal_transforms(src)
    return volume_transforms(src)


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None or value == "none":
        return None
    parts = [p for p in str(value).strip("()[] ").split(",") if p.strip()] if isinstance(value, str) else list(value)
    return (float(parts[0]), float(parts[1])) if len(parts) == 2 else None


def volume_preprocessing(src: ExportSource) -> dict[str, Any]:
    """How training volumes were prepared, read from the data spec (``KIND:PATH?options``) of the run.

    * ``medmnist3d``: ``normalise=unit`` (default) is uint8 / 255 -> [0, 1]; ``zscore`` used train-split
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
    if kind == "medmnist3d":
        mode = str(options.get("normalise", "unit"))
        pre["normalization"] = {
            "unit": {"kind": "range", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0, "clip": False},
            "zscore": {"kind": "zscore", "note": "training used train-split mean/std; inference z-scores each volume"},
        }.get(mode, {"kind": "none"})
    elif kind in ("nifti", "manifest3d"):
        window = _pair(options.get("window"))
        mode = str(options.get("normalise", "auto"))
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
    if isinstance(recorded, dict) and recorded.get("kind"):
        pre["normalization"] = dict(recorded)
    return pre


def _normalize_transform(norm: dict[str, Any], channel_wise: bool = True) -> dict[str, Any] | None:
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
    """NIfTI/NRRD/... -> ``(C, D, H, W)`` float32 prepared as in training, at the network's input size."""
    pre = volume_preprocessing(src)
    spatial = list(src.input_shape[1:])
    xforms: list[dict[str, Any] | None] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, "ensure_channel_first": True},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    ]
    if pre.get("orientation"):
        xforms.append({"_target_": "Orientationd", "keys": "image", "axcodes": pre["orientation"]})
    if pre.get("spacing"):
        xforms.append({"_target_": "Spacingd", "keys": "image", "pixdim": [pre["spacing"]] * 3, "mode": "bilinear"})
    if pre.get("window"):
        lo, hi = pre["window"]
        xforms.append(_normalize_transform({"kind": "range", "a_min": lo, "a_max": hi, "clip": True}))
    xforms.append(_normalize_transform(pre["normalization"]))
    if pre.get("foreground_crop"):
        fc = pre["foreground_crop"]
        xforms.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "margin": fc["margin"],
                       "select_fn": f"$lambda t: t > {fc['threshold']}", "allow_smaller": True})
    if pre["resize"]:
        xforms.append({"_target_": "Resized", "keys": "image", "spatial_size": spatial, "mode": "trilinear"})
    else:
        xforms.append({"_target_": "ResizeWithPadOrCropd", "keys": "image", "spatial_size": spatial})
    return [x for x in xforms if x is not None], {"normalization": pre["normalization"], "preprocessing": pre}


def _common(src: ExportSource) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "device": DEVICE,
    }


def _file_patterns(src: ExportSource) -> str:
    if src.modality == "signal":
        return "['*.npy']"
    return "['*.nii', '*.nii.gz', '*.mha', '*.nrrd']"


def inference_config(src: ExportSource) -> dict[str, Any]:
    """Inference over every image file in ``dataset_dir``: per-file CSV row of probabilities or features."""
    xforms, _ = io_transforms(src)
    post: list[dict[str, Any]] = []
    if src.is_classifier:
        act = {"sigmoid": True} if src.multilabel else {"softmax": True}
        post.append({"_target_": "Activationsd", "keys": "pred", **act})
    post.append({"_target_": "EnsureTyped", "keys": "pred", "dtype": "$torch.float32"})
    cfg = _common(src)
    cfg.update({
        "datalist": f"$sorted(f for p in {_file_patterns(src)} for f in glob.glob(os.path.join(@dataset_dir, p)))",
        "network_def": network_def(src, src.head, src.num_classes),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": xforms + [
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"}]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
             "load_dict": {"model": "@network"}, "map_location": "@device"},
            {"_target_": "StatsHandler", "iteration_log": False},
            {"_target_": "ClassificationSaver", "output_dir": "@output_dir",
             "filename": "probabilities.csv" if src.is_classifier else "features.csv",
             "batch_transform": "$lambda batch: [x['image'].meta for x in batch]",
             "output_transform": "$lambda output: [x['pred'] for x in output]"},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    })
    return cfg


def train_config(src: ExportSource, num_classes: int | None = None, max_epochs: int = 10, lr: float = 1e-4,
                 batch_size: int = 2) -> dict[str, Any]:
    """Supervised fine-tuning with ``SupervisedTrainer`` from ``dataset_dir/dataset.json``.

    ``dataset.json`` is a MONAI (Decathlon-style) datalist: ``{"training": [{"image": "a.nii.gz",
    "label": 1}, ...]}``, image paths relative to ``dataset_dir``. A classifier bundle fine-tunes
    its own head; an encoder bundle adds a ``linear`` head with ``num_classes`` outputs and
    loads the pretrained encoder non-strictly (the head starts fresh).
    """
    xforms, _ = io_transforms(src)
    head = src.head or "linear"
    k = src.num_classes if src.is_classifier else (num_classes or 2)
    multilabel = src.multilabel
    label_t = {"_target_": "EnsureTyped", "keys": "label", "dtype": "$torch.float32" if multilabel else "$torch.long"}
    augment = {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0} if src.modality == "volume" else \
        {"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.5, "std": 0.01}
    act = {"sigmoid": True} if multilabel else {"softmax": True}
    cfg = _common(src)
    cfg["output_dir"] = "$@bundle_root + '/finetune'"
    cfg["imports"].append("$import ignite")
    cfg.update({
        "num_classes": k,
        "max_epochs": max_epochs,
        "learning_rate": lr,
        "pretrained_path": "$@bundle_root + '/models/model.pt'",
        "datalist_file": "$os.path.join(@dataset_dir, 'dataset.json')",
        "network_def": network_def(src, head, "@num_classes"),
        "network": "$@network_def.to(@device)",
        "loss": {"_target_": "torch.nn.BCEWithLogitsLoss"} if multilabel else {"_target_": "torch.nn.CrossEntropyLoss"},
        "optimizer": {"_target_": "torch.optim.AdamW", "params": "$@network.parameters()", "lr": "@learning_rate"},
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": xforms + [augment, label_t]},
            "dataset": {
                "_target_": "Dataset",
                "data": "$monai.data.load_decathlon_datalist(@datalist_file, is_segmentation=False, "
                        "data_list_key='training')",
                "transform": "@train#preprocessing",
            },
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": batch_size,
                           "shuffle": True, "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "postprocessing": {"_target_": "Compose", "transforms": [{"_target_": "Activationsd", "keys": "pred", **act}]},
            "key_metric": {"train_accuracy": {
                "_target_": "ignite.metrics.Accuracy", "is_multilabel": multilabel,
                "output_transform": "$lambda out: (torch.stack([o['pred'] for o in out])"
                                    + (".round()" if multilabel else "")
                                    + ", torch.stack([torch.as_tensor(o['label']) for o in out]).reshape("
                                    + ("len(out), -1" if multilabel else "-1") + ").long())",
            }},
            "handlers": [
                {"_target_": "CheckpointLoader", "load_path": "@pretrained_path", "load_dict": {"model": "@network"},
                 "map_location": "@device", "strict": src.is_classifier},
                {"_target_": "StatsHandler", "tag_name": "train_loss",
                 "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
                {"_target_": "CheckpointSaver", "save_dir": "@output_dir", "save_dict": {"model": "@network"},
                 "save_final": True, "final_filename": "model.pt", "save_key_metric": False},
            ],
            "trainer": {
                "_target_": "SupervisedTrainer", "max_epochs": "@max_epochs", "device": "@device",
                "train_data_loader": "@train#dataloader", "network": "@network", "loss_function": "@loss",
                "optimizer": "@optimizer", "inferer": "@train#inferer", "postprocessing": "@train#postprocessing",
                "key_train_metric": "@train#key_metric", "train_handlers": "@train#handlers", "amp": False,
            },
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@train#trainer.run()"],
    })
    return cfg


def pretrain_config(src: ExportSource, steps: int | None = None) -> dict[str, Any] | None:
    """Pretraining as a bundle: our data loader, encoder, task and engine, each by ``_target_``.

    ``python -m monai.bundle run --config_file configs/pretrain.json --data_spec KIND:PATH --steps N``
    reruns the recorded pretext task on new data. ``None`` when the checkpoint records no task.
    """
    rc = src.run_config
    if not rc.get("task") or rc.get("head"):
        return None
    train = {k: v for k, v in dict(rc.get("train") or {}).items() if k != "steps"}
    enc_kwargs = {k: v for k, v in src.encoder_kwargs.items() if k not in ("in_channels", "img_size", "n_chans", "n_times", "sfreq")}
    return {
        "imports": ["$import torch", "$from pretext.config import TrainConfig",
                    "$from volssl.bundle.networks import load_plugins"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/pretrain'",
        "data_spec": str(rc.get("data", "")),
        "steps": int(steps or dict(rc.get("train") or {}).get("steps", 1000)),
        "modules": list(src.modules),
        "data": {"_target_": "pretext.data.load_data", "spec": "@data_spec"},
        "encoder": {"_target_": "pretext.data.encoder_for_data", "name": src.encoder, "data": "@data",
                    **_jsonable(enc_kwargs)},
        "task": {"_target_": "pretext.registry.create_task", "name": str(rc["task"]), "encoder": "@encoder",
                 **_jsonable(dict(rc.get("task_cfg") or {}))},
        "train_config": {"_target_": "pretext.config.build_dataclass", "cls": "$TrainConfig",
                         "values": {**_jsonable(train), "steps": "@steps"}},
        "run_config": {"task": str(rc["task"]), "task_cfg": _jsonable(dict(rc.get("task_cfg") or {})),
                       "encoder": src.encoder, "encoder_cfg": _jsonable(enc_kwargs), "data": "@data_spec",
                       "modality": "$@data.modality", "input_shape": "$list(@data.input_shape)",
                       "sfreq": "$@data.sfreq", "channel_names": "$list(@data.channel_names)"},
        "fit": {"_target_": "pretext.engine.fit", "task": "@task",
                "dataset": "$@data.splits['train']", "cfg": "@train_config", "out_dir": "@output_dir",
                "run_config": "@run_config", "_mode_": "callable"},
        "initialize": ["$load_plugins(@modules)"],
        "run": ["$@fit()"],
    }
