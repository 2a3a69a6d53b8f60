"""pretext.options: one spelling per option; old and misspelt names are refused with the name to write."""

from __future__ import annotations

import pytest

from pretext.errors import ConfigError
from pretext.options import REMOVED, check_names, parse_value, validate_options


def test_valid_names_pass() -> None:
    check_names({"val_fraction": 0.1, "skip_broken": True}, ["val_fraction", "test_fraction", "skip_broken"], "spec")


@pytest.mark.parametrize(("old", "new"), [("val_frac", "val_fraction"), ("test_frac", "test_fraction"),
                                          ("normalise", "normalize"), ("on_error", "skip_broken")])
def test_old_names_are_refused_naming_the_new_one(old: str, new: str) -> None:
    valid = ["val_fraction", "test_fraction", "normalize", "skip_broken"]
    with pytest.raises(ConfigError, match=rf"spec: option '{old}' is now called {new}"):
        check_names({old: 1}, valid, "spec")
    assert REMOVED[old].startswith(new)


def test_misspelt_names_get_the_closest_valid_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'val_fractoin'; did you mean 'val_fraction'\?"):
        check_names({"val_fractoin": 0.1}, ["val_fraction", "seed"], "spec")
    with pytest.raises(ConfigError, match=r"unknown option 'zzz' \(valid options: val_fraction, seed\)"):
        check_names({"zzz": 0.1}, ["val_fraction", "seed"], "spec")


def test_data_kind_options_are_checked_and_typed() -> None:
    def kind(path: str, val_fraction: float = 0.0, skip_broken: bool = False, seed: int = 0) -> None: ...

    assert validate_options(kind, {"skip_broken": "yes", "seed": "2"}, "spec") == {"skip_broken": True, "seed": 2}
    with pytest.raises(ConfigError, match=r"spec skip_broken='sometimes' must be true or false"):
        validate_options(kind, {"skip_broken": "sometimes"}, "spec")
    with pytest.raises(ConfigError, match=r"spec: option 'on_error' is now called skip_broken"):
        validate_options(kind, {"on_error": "skip"}, "spec")


@pytest.mark.parametrize(("value", "flag"), [(True, True), ("yes", True), ("1", True), ("off", False),
                                             (False, False), ("false", False)])
def test_bool_values_through_pydantic(value: object, flag: bool) -> None:
    assert parse_value(bool, value, "opt") is flag


def test_bad_bool_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match="skip_broken='sometimes' must be true or false"):
        parse_value(bool, "sometimes", "skip_broken")


def test_load_data_refuses_old_option_names(tmp_path) -> None:
    from pretext.data import load_data

    with pytest.raises(ConfigError, match=r"option 'val_frac' is now called val_fraction"):
        load_data("synthetic_ecg:?n_patients=4&val_frac=0.2")
