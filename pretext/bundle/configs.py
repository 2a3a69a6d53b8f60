"""The JSON configs of an exported bundle: ``inference.json``, ``train.json``, ``pretrain.json``.

Every component is named by ``_target_`` (MONAI transforms, engines, handlers, and our
:func:`pretext.bundle.networks.build_network`), so MONAI's ``ConfigParser`` builds them and
``python -m monai.bundle run`` runs them. ``train.json`` uses MONAI's standard train property
ids (``bundle_root``, ``device``, ``dataset_dir``, ``network_def``, ``train#dataset``,
``train#trainer``, ``train#trainer#max_epochs``, ``train#inferer``, ``train#handlers``,
``train#preprocessing``, ``train#postprocessing``, ``train#key_metric``), so
``ConfigWorkflow(workflow_type="train").check_properties()`` finds them all.
"""

from __future__ import annotations

from typing import Any

from pretext.bundle.source import ExportSource
from pretext.modality import get_modality

DEVICE = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"


def network_def(src: ExportSource, head: str | None, num_classes: Any = None) -> dict[str, Any]:
    """``network_def`` item: our factory over the encoder registry."""
    item: dict[str, Any] = {
        "_target_": "pretext.bundle.networks.build_network",
        "encoder": src.encoder,
        "encoder_kwargs": _jsonable(src.encoder_kwargs),
    }
    if head is not None:
        item.update(head=head, num_classes=num_classes)
        if src.head_kwargs and head == src.head:
            item["head_kwargs"] = _jsonable(src.head_kwargs)
    if src.modules:
        item["modules"] = list(src.modules)
    grid = bundle_grid(src)
    if grid is not None:  # a patch-trained encoder: the network tiles whole inputs (GridPooled)
        item["grid"] = _jsonable(grid)
    return item


def bundle_grid(src: ExportSource) -> dict[str, Any] | None:
    """The sliding-grid options of a patch-trained encoder's network (the modality's), else None."""
    return get_modality(src.modality).bundle_grid(src)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def io_transforms(src: ExportSource) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load + normalise + size transforms for key ``"image"``, and a description of them (the modality's)."""
    return get_modality(src.modality).bundle_transforms(src)


def _common(src: ExportSource) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "device": DEVICE,
    }


def _file_patterns(src: ExportSource) -> str:
    return repr(list(get_modality(src.modality).bundle_file_patterns))


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
    loads the pretrained encoder non-strictly (the head starts fresh). A patch-trained encoder
    (``network_def`` with a ``grid``) trains on one random patch per image (``RandSpatialCropd``); its
    network pools the grid of whole images at inference.
    """
    xforms, _ = io_transforms(src)
    head = src.head or "linear"
    k = src.num_classes if src.is_classifier else (num_classes or 2)
    multilabel = src.multilabel
    label_t = {"_target_": "EnsureTyped", "keys": "label", "dtype": "$torch.float32" if multilabel else "$torch.long"}
    augment = get_modality(src.modality).bundle_augmentation()
    grid = bundle_grid(src)
    if grid is not None:  # fine-tune on random patches of the whole inputs, as the harness does (pad, then crop)
        patch = [int(p) for p in grid["patch_size"]]
        xforms = xforms + [{"_target_": "SpatialPadd", "keys": "image", "spatial_size": patch},
                           {"_target_": "RandSpatialCropd", "keys": "image", "roi_size": patch, "random_size": False}]
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
                    "$from pretext.bundle.networks import load_plugins"],
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
        "train_config": {"_target_": "pretext.config.build_config", "cls": "$TrainConfig",
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
