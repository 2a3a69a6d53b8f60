"""Read what a bundle is made from: a medssl checkpoint and the ``run_config`` inside it.

A pretraining checkpoint (``sslbench pretrain``) holds ``{"model": task.state_dict(),
"run_config": {"task", "task_cfg", "encoder", "encoder_cfg", "data", "train"}}``; the encoder's
weights are the ``encoder.*`` entries. A fine-tuned classifier holds ``encoder.*`` and
``head.*`` entries and says so with ``run_config["head"]`` (``{"kind", "num_classes", ...options}``;
``kind``/``num_classes`` may be left out for a plain ``nn.Linear`` or :class:`pretext.heads.LinearHead`,
recognised from the keys), with ``class_names`` and ``multilabel`` where known. Without
``run_config["head"]``, ``head.*`` entries belong to the pretext task and are not exported.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch

from pretext.errors import ConfigError, DataError, UserError
from pretext.modality import get_modality, modality_of_kwargs
from pretext.registry import ENCODERS


@dataclasses.dataclass
class ExportSource:
    """Everything the bundle writer needs, read from one checkpoint.

    Attributes:
        path: the checkpoint file.
        run_config: the checkpoint's ``run_config``.
        modality: "volume" or "signal" (from the encoder registry, else the shape of the config).
        encoder: registered encoder name.
        encoder_kwargs: factory keyword arguments, sized (channels, image size / n_times, sfreq).
        input_shape: ``(C, D, H, W)`` or ``(C, T)`` the network takes.
        encoder_state: encoder weights (keys without the ``encoder.`` prefix).
        head: head kind (``None`` for a pretrained encoder), ``head_kwargs`` its options.
        head_state: head weights (keys without ``head.``).
        num_classes, class_names, multilabel: classifier outputs.
        modules: plugin modules that register the encoder (not one of the built-ins).
    """

    path: Path
    run_config: dict[str, Any]
    modality: str
    encoder: str
    encoder_kwargs: dict[str, Any]
    input_shape: tuple[int, ...]
    encoder_state: dict[str, torch.Tensor]
    head: str | None = None
    head_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    head_state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    num_classes: int | None = None
    class_names: list[str] = dataclasses.field(default_factory=list)
    multilabel: bool = False
    modules: list[str] = dataclasses.field(default_factory=list)
    step: int | None = None
    num_features: int = 0
    pretraining: dict[str, Any] = dataclasses.field(default_factory=dict)
    results: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.head is not None

    @property
    def sfreq(self) -> float | None:
        value = self.encoder_kwargs.get("sfreq")
        return None if value is None else float(value)


def _plugin_modules(name: str) -> list[str]:
    from pretext.registry import builtin_packages

    module = getattr(ENCODERS.get(name), "__module__", "") or ""
    builtin = builtin_packages("encoder")
    if not module or any(module == b or module.startswith(b + ".") for b in builtin):
        return []
    if ENCODERS.meta(name).get("plugin"):  # an entry point loads it by itself
        return []
    return [module]


def _sized_kwargs(name: str, cfg: dict[str, Any], run_config: dict[str, Any], path: Path) -> tuple[str, dict[str, Any], tuple[int, ...]]:
    """``(modality, encoder kwargs sized for the input, input shape (C, ...))`` of a checkpoint's encoder."""
    factory = ENCODERS.get(name)
    params = inspect.signature(factory).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    modality = ENCODERS.meta(name).get("modality") or modality_of_kwargs({**defaults, **cfg})
    if modality is None:
        raise ConfigError(f"checkpoint {str(path)!r}: cannot tell the modality of encoder {name!r} (no registered "
                          "modality and none of its size keywords); register it with modality=... ")
    adapter = get_modality(modality)
    kwargs = dict(cfg)
    shape = run_config.get("input_shape")
    if shape is not None:  # the data's (C, ...) shape, where the run recorded it
        for k, v in adapter.encoder_kwargs([int(s) for s in shape]).items():
            if v is not None:
                kwargs.setdefault(k, v)
    for k in adapter.size_keys:
        if k not in kwargs and defaults.get(k) is not None:
            kwargs[k] = defaults[k]
    return modality, kwargs, adapter.input_shape(kwargs, f"checkpoint {str(path)!r}: encoder {name!r}")


def _detect_head(head_state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any], int]:
    if set(head_state) == {"weight", "bias"}:
        return "linear", {}, int(head_state["weight"].shape[0])
    if "fc.weight" in head_state:
        return "linear_head", {"batch_norm": "norm.running_mean" in head_state}, int(head_state["fc.weight"].shape[0])
    raise ConfigError(
        f"cannot tell the head from its keys {sorted(head_state)}; record run_config['head'] = "
        "{'kind': 'linear'|'linear_head'|'mlp', 'num_classes': K, ...} in the checkpoint"
    )


def read_source(path: str | Path, overrides: dict[str, Any] | None = None) -> ExportSource:
    """Read a checkpoint for export.

    Args:
        path: a ``.ckpt`` written by ``sslbench pretrain`` or by the fine-tuning harness, a run folder
            (its ``checkpoints/last.ckpt``), or an ``encoder.safetensors`` with ``run_config`` metadata.
        overrides: encoder keyword arguments that replace the recorded ones (``--encoder.KW``).

    Raises:
        DataError: the file is missing or not a medssl checkpoint.
        UserError: the checkpoint has no ``run_config`` naming its encoder.
    """
    from pretext.engine.checkpoint import encoder_state, read_run

    state, path = read_run(path)
    run_config = state.get("run_config")
    if not isinstance(run_config, dict) or not run_config.get("encoder"):
        raise UserError(
            f"checkpoint {str(path)!r} has no run_config with an 'encoder' entry, so the network cannot be rebuilt; "
            "export a checkpoint written by `sslbench pretrain` or the fine-tuning harness (they embed run_config)"
        )
    name = str(run_config["encoder"])
    cfg = dict(run_config.get("encoder_cfg") or {})
    cfg.update(overrides or {})
    modality, kwargs, input_shape = _sized_kwargs(name, cfg, run_config, path)
    model = state["model"]
    enc_state = encoder_state(model)
    if not enc_state:
        raise DataError(f"checkpoint {str(path)!r} has no 'encoder.*' weights in its model state; keys start with "
                        f"{sorted({k.split('.')[0] for k in model})}")
    src = ExportSource(path=path, run_config=run_config, modality=modality, encoder=name, encoder_kwargs=kwargs,
                       input_shape=input_shape, encoder_state=enc_state, modules=_plugin_modules(name),
                       step=int(state["step"]) if isinstance(state.get("step"), (int, float)) else None,
                       results=dict(run_config.get("results") or {}))
    summary = path.parent.parent / "summary.json" if path.parent.name == "checkpoints" else path.parent / "summary.json"
    if summary.is_file():  # the engine's run summary: final loss and metrics of the pretext task
        import json

        try:
            info = json.loads(summary.read_text())
            src.pretraining = {"steps": info.get("steps"), "elapsed_s": info.get("elapsed_s"),
                               **{f"final_{k}": v for k, v in (info.get("final") or {}).items()
                                  if k in ("loss", "acc", "step") or k.startswith("val/")}}
        except (ValueError, OSError):
            src.pretraining = {}
    head_cfg = run_config.get("head")
    if head_cfg:  # a fine-tuned classifier; a pretext task's own "head.*" (no run_config["head"]) is not exported
        head_state = {k[len("head."):]: v for k, v in model.items() if k.startswith("head.")}
        if not head_state:
            raise DataError(f"checkpoint {str(path)!r} describes a head {head_cfg} but holds no 'head.*' weights")
        head_cfg = dict(head_cfg) if isinstance(head_cfg, dict) else {}
        detected = _detect_head(head_state) if "kind" not in head_cfg or "num_classes" not in head_cfg else None
        kind = str(head_cfg.pop("kind", None) or detected[0])  # type: ignore[index]
        num_classes = int(head_cfg.pop("num_classes", None) or detected[2])  # type: ignore[index]
        options = head_cfg or (detected[1] if detected and detected[0] == kind else {})
        src.head, src.head_kwargs, src.head_state, src.num_classes = kind, options, head_state, num_classes
        src.class_names = [str(c) for c in run_config.get("class_names") or []] or [f"class {i}" for i in range(num_classes)]
        src.multilabel = bool(run_config.get("multilabel", False))
    return src


def save_classifier_checkpoint(
    path: str | Path,
    encoder: torch.nn.Module,
    head: torch.nn.Module,
    run_config: dict[str, Any],
    head_spec: dict[str, Any],
    class_names: list[str] | None = None,
    multilabel: bool = False,
    results: dict[str, float] | None = None,
) -> Path:
    """Save a fine-tuned classifier so ``sslbench export-bundle`` can export it.

    Args:
        path: the ``.ckpt`` to write (atomically).
        encoder: the fine-tuned encoder; head: its classification head ``(B, F) -> (B, K)``.
        run_config: the pretraining run's ``run_config`` (encoder name and options, task, data).
        head_spec: ``{"kind": "linear"|"linear_head"|"mlp", "num_classes": K, ...head options}``
            (see :func:`pretext.bundle.networks.make_head`).
        class_names: names of the K outputs; multilabel: sigmoid outputs instead of softmax.
        results: downstream metrics for the README and ``eval_metrics`` (test-fold numbers).
    """
    from pretext.engine.checkpoint import save_checkpoint

    if "kind" not in head_spec or "num_classes" not in head_spec:
        raise ConfigError(f"head_spec {head_spec} needs 'kind' and 'num_classes'")
    state = {**{f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()},
             **{f"head.{k}": v.detach().cpu() for k, v in head.state_dict().items()}}
    rc = {**run_config, "head": dict(head_spec), "class_names": list(class_names or []), "multilabel": bool(multilabel),
          "results": dict(results or {})}
    save_checkpoint(Path(path), {"model": state, "run_config": rc})
    return Path(path)
