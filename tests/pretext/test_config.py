"""Config dataclasses: YAML round trip, coercion, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from pretext.config import TrainConfig, build_dataclass, from_yaml, to_yaml
from pretext.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Nested:
    patch: tuple[int, int, int] = (8, 8, 8)
    ratio: float = 0.75
    names: tuple[str, ...] = ("a",)
    weights: dict = dataclasses.field(default_factory=dict)
    axis: int | None = None


def test_train_config_round_trips() -> None:
    cfg = build_dataclass(TrainConfig, {"steps": "100", "precision": "bf16-mixed", "ema": 0.99, "compile": "false"})
    assert cfg.steps == 100 and cfg.compile is False
    assert from_yaml(TrainConfig, to_yaml(cfg)) == cfg


def test_nested_types_round_trip() -> None:
    cfg = build_dataclass(Nested, {"patch": [4, 4, 4], "names": "x,y", "weights": {"rotation": 1.0}, "axis": 2})
    assert cfg.patch == (4, 4, 4) and cfg.names == ("x", "y") and cfg.axis == 2
    assert from_yaml(Nested, to_yaml(cfg)) == cfg


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"stepz": 1}, r"unknown option\(s\) \['stepz'\]; valid options: steps"),
        ({"precision": "fp8"}, "precision='fp8' is not one of"),
        ({"steps": 0}, "steps=0 must be >= 1"),
        ({"lr": "fast"}, "lr='fast' is not a valid float"),
        ({"ema": 1.5}, "ema=1.5 must be in"),
    ],
)
def test_bad_values_name_the_field(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_dataclass(TrainConfig, values)


def test_data_spec_options_keep_plus_and_types() -> None:
    from pretext.data import parse_spec

    kind, path, opts = parse_spec(r"edf:/data/eeg?pattern=Subject(\d+)_(\d)\.edf&window=2.5&bandpass=[0.5,40]&x=a%26b")
    assert (kind, path) == ("edf", "/data/eeg")
    assert opts == {"pattern": r"Subject(\d+)_(\d)\.edf", "window": 2.5, "bandpass": [0.5, 40], "x": "a&b"}
    with pytest.raises(ConfigError, match="must read key=value"):
        parse_spec("edf:/x?window")
    with pytest.raises(ConfigError, match="must read KIND:PATH"):
        parse_spec("just-a-path.npz")
