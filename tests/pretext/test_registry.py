"""Registry: decorators, lookups with helpful errors, and third-party plugins via entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pretext.errors import ConfigError
from pretext.registry import Registry, create_encoder, create_task, list_encoders, list_tasks
from pretext.testing import TinyEncoder, ToyTask


def test_register_and_lookup() -> None:
    reg = Registry("task")
    reg._loaded = True  # no built-ins for this private table
    reg.register("toy", ToyTask, modality="signal")
    assert reg.get("toy") is ToyTask and reg.names(modality="signal") == ["toy"]
    with pytest.raises(ConfigError, match="unknown task 'nope'; valid tasks: toy"):
        reg.get("nope")
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("toy", TinyEncoder)


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown task 'no_such_task'; valid tasks: "):
        create_task("no_such_task", TinyEncoder())
    with pytest.raises(ConfigError, match="unknown encoder 'no_such_encoder'; valid encoders: "):
        create_encoder("no_such_encoder")


def test_builtin_components_are_registered() -> None:
    tasks, encoders = list_tasks(), list_encoders()
    for name in ("slice_order", "rotation", "pixel_shuffle", "mae3d", "combined", "cpc", "pclr"):
        assert name in tasks, f"task {name} not registered"
    assert list_encoders("volume") and list_encoders("signal")
    assert set(list_encoders("volume")) | set(list_encoders("signal")) <= set(encoders)


def test_validate_options_names_the_bad_option_and_types_values() -> None:
    from pretext.options import validate_options

    def f(a: int, b: bool = False, c: str = "x") -> None: ...

    with pytest.raises(ConfigError, match=r"encoder 'f': unknown option 'bb'; did you mean 'b'\? \(valid options: a, b, c\)"):
        validate_options(f, {"bb": 1}, "encoder 'f'")
    assert validate_options(f, {"a": "3", "b": "yes", "c": 5}, "encoder 'f'") == {"a": 3, "b": True, "c": 5}
    with pytest.raises(ConfigError, match=r"encoder 'f' b='sometimes' must be true or false"):
        validate_options(f, {"b": "sometimes"}, "encoder 'f'")


def test_task_config_unknown_field_lists_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from pretext import registry

    monkeypatch.setitem(registry.TASKS._items, "toy_cfg", ToyTask)
    monkeypatch.setitem(registry.TASKS._meta, "toy_cfg", {})
    task = create_task("toy_cfg", TinyEncoder(), noise=0.25)
    assert task.cfg.noise == 0.25
    with pytest.raises(ConfigError, match="unknown option 'nosie'; did you mean 'noise'.*valid options: noise"):
        create_task("toy_cfg", TinyEncoder(), nosie=0.1)


PLUGIN_PY = '''
import dataclasses
from torch import nn
from pretext.base import PretextTask
from pretext.testing import TinyEncoder


class JigsawToy(PretextTask):
    """A third-party task added through the medssl.tasks entry point."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        pieces: int = 4

    modality = "signal"


def tiny(in_features: int = 16):
    """A third-party encoder."""
    return TinyEncoder(in_features)
'''


@pytest.mark.slow
def test_installed_plugin_adds_task_and_encoder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "medssl_toy_plugin").mkdir(parents=True)
    (src / "medssl_toy_plugin" / "__init__.py").write_text(PLUGIN_PY)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "medssl-toy-plugin"
        version = "0.1"
        [project.entry-points."medssl.tasks"]
        jigsaw_toy = "medssl_toy_plugin:JigsawToy"
        [project.entry-points."medssl.encoders"]
        tiny_plugin = "medssl_toy_plugin:tiny"
        '''))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-m", "sslbench.cli", "list"], env=env, capture_output=True,
                         encoding="utf-8", errors="replace", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "jigsaw_toy" in out.stdout and "plugin medssl_toy_plugin:JigsawToy" in out.stdout
    assert "tiny_plugin" in out.stdout
    code = ("from pretext import create_task, create_encoder\n"
            "t = create_task('jigsaw_toy', create_encoder('tiny_plugin', in_features=8), pieces=9)\n"
            "print(type(t).__name__, t.cfg.pieces, t.encoder.num_features)")
    made = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert made.stdout.split() == ["JigsawToy", "9", "8"], made.stderr


def test_fit_records_how_task_and_encoder_were_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pretext import registry
    from pretext.config import TrainConfig
    from pretext.engine import fit, load_checkpoint
    from pretext.testing import RandomSplit

    monkeypatch.setitem(registry.TASKS._items, "toy_rec", ToyTask)
    monkeypatch.setitem(registry.TASKS._meta, "toy_rec", {"modality": "signal"})
    monkeypatch.setitem(registry.ENCODERS._items, "tiny_rec", TinyEncoder)
    monkeypatch.setitem(registry.ENCODERS._meta, "tiny_rec", {"modality": "signal"})
    task = create_task("toy_rec", create_encoder("tiny_rec", in_features=16, num_features=4), noise=0.2)
    fit(task, RandomSplit(), TrainConfig(steps=2, batch_size=8, progress=False, precision="32"), out_dir=tmp_path)
    rc = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["run_config"]
    assert rc["task"] == "toy_rec" and rc["task_cfg"]["noise"] == 0.2
    assert rc["encoder"] == "tiny_rec" and rc["encoder_cfg"] == {"in_features": 16, "num_features": 4}
    assert rc["modality"] == "signal"


def test_a_new_task_is_one_file_in_a_scanned_package(tmp_path, monkeypatch) -> None:
    """Built-in packages are scanned: a module dropped into one registers without any import line."""
    import importlib

    from pretext.registry import TASKS, _import_submodules

    pkg = tmp_path / "scanpkg"
    (pkg / "nested").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nested" / "__init__.py").write_text("")
    body = ("from pretext.base import PretextTask\nfrom pretext.registry import register_task\n\n"
            "@register_task({name!r}, modality='volume')\nclass T(PretextTask):\n    pass\n")
    (pkg / "my_task.py").write_text(body.format(name="_scan_top"))
    (pkg / "nested" / "deep_task.py").write_text(body.format(name="_scan_deep"))
    monkeypatch.syspath_prepend(str(tmp_path))
    _import_submodules(importlib.import_module("scanpkg"))
    assert {"_scan_top", "_scan_deep"} <= set(TASKS.names())
    for name in ("_scan_top", "_scan_deep"):
        TASKS._items.pop(name)
        TASKS._meta.pop(name)
