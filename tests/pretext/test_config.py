"""Configuration models: YAML round trip, pydantic validation, one-line errors naming the field and the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pretext.config import ConfigModel, Field, TrainConfig, build_config, config_fields, to_dict, to_yaml
from pretext.errors import ConfigError

DATA = Path(__file__).parent / "data"


class Nested(ConfigModel):
    patch: tuple[int, int, int] = (8, 8, 8)
    ratio: float = Field(0.75, gt=0, lt=1)
    names: tuple[str, ...] = ("a",)
    weights: dict[str, float] = {}
    axis: int | None = None


@dataclasses.dataclass(frozen=True)
class StillADataclass:
    """A task ``Config`` written as a frozen dataclass (third-party tasks) is validated the same way."""

    noise: float = 0.5
    sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise ConfigError(f"noise={self.noise} must be >= 0")


def test_train_config_round_trips() -> None:
    cfg = build_config(TrainConfig, {"steps": "100", "precision": "bf16-mixed", "ema": 0.99, "compile": "false"})
    assert cfg.steps == 100 and cfg.compile is False
    assert build_config(TrainConfig, yaml.safe_load(to_yaml(cfg))) == cfg
    assert build_config(TrainConfig, {"precision": 32}).precision == "32"  # YAML reads 32 as a number


def test_nested_types_round_trip() -> None:
    cfg = build_config(Nested, {"patch": [4, 4, 4], "names": "x,y", "weights": {"rotation": 1.0}, "axis": 2})
    assert cfg.patch == (4, 4, 4) and cfg.names == ("x", "y") and cfg.axis == 2
    assert build_config(Nested, yaml.safe_load(to_yaml(cfg))) == cfg
    assert to_dict(cfg)["patch"] == [4, 4, 4]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"stepz": 1}, r"train: unknown option 'stepz'; did you mean 'steps'\? \(valid options: steps, "),
        ({"precision": "fp8"}, r"train precision='fp8' must be one of 'bf16-mixed', '16-mixed', '32' or 'auto'$"),
        ({"steps": 0}, r"train steps=0 must be >= 1$"),
        ({"lr": "fast"}, r"train lr='fast' must be a number$"),
        ({"ema": 1.5}, r"train ema=1.5 must be < 1"),
        ({"lr": float("nan")}, r"train lr=nan must be a finite number"),
        ({"compile": "sometimes"}, r"train compile='sometimes' must be true or false"),
        ({"steps": 1.5}, r"train steps=1.5 must be a whole number"),
    ],
)
def test_bad_values_name_the_field_value_and_fix(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        build_config(TrainConfig, values, "train")
    assert "\n" not in str(err.value)


def test_direct_construction_gives_the_same_errors() -> None:
    with pytest.raises(ConfigError, match=r"TrainConfig steps=0 must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match=r"Nested ratio=2 must be < 1"):
        Nested(ratio=2)
    with pytest.raises(ValueError, match="frozen"):  # a program's mistake, not the user's: pydantic's own error
        TrainConfig().steps = 3  # type: ignore[misc]


def test_dataclass_configs_still_validate() -> None:
    cfg = build_config(StillADataclass, {"noise": "0.25", "sizes": [1, 2]}, "task 'x'")
    assert cfg == StillADataclass(0.25, (1, 2)) and config_fields(StillADataclass) == {"noise": 0.5, "sizes": ()}
    with pytest.raises(ConfigError, match=r"task 'x': unknown option 'nosie'; did you mean 'noise'\?"):
        build_config(StillADataclass, {"nosie": 1}, "task 'x'")
    with pytest.raises(ConfigError, match=r"task 'x': noise=-1.0 must be >= 0"):
        build_config(StillADataclass, {"noise": -1}, "task 'x'")
    with pytest.raises(ConfigError, match=r"task 'x' noise='loud' must be a number"):
        build_config(StillADataclass, {"noise": "loud"}, "task 'x'")


def test_renamed_fields_are_refused_with_the_new_name() -> None:
    class Horizon(ConfigModel):
        renamed = {"steps": "horizon"}
        horizon: int = 12

    with pytest.raises(ConfigError, match=r"option 'steps' is now called horizon; write that instead"):
        build_config(Horizon, {"steps": 3})


def test_data_spec_options_keep_plus_and_types() -> None:
    from pretext.data import parse_spec

    kind, path, opts = parse_spec(r"edf:/data/eeg?pattern=Subject(\d+)_(\d)\.edf&window=2.5&bandpass=[0.5,40]&x=a%26b")
    assert (kind, path) == ("edf", "/data/eeg")
    assert opts == {"pattern": r"Subject(\d+)_(\d)\.edf", "window": 2.5, "bandpass": [0.5, 40], "x": "a&b"}
    with pytest.raises(ConfigError, match="must read key=value"):
        parse_spec("edf:/x?window")
    with pytest.raises(ConfigError, match="must read KIND:PATH"):
        parse_spec("just-a-path.npz")
