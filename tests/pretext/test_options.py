"""pretext.options: one spelling per data option; the old ones still work with a warning."""

from __future__ import annotations

import pytest

from pretext.errors import ConfigError
from pretext.options import RENAMED, accept_renamed, as_flag, rename_options


def test_new_names_pass_untouched():
    opts = {"val_fraction": 0.1, "test_fraction": 0.2, "skip_broken": True, "normalize": "zscore", "x": 1}
    assert rename_options(opts) == opts


@pytest.mark.parametrize(("old", "value", "new", "expected"), [
    ("val_frac", 0.1, "val_fraction", 0.1),
    ("test_frac", 0.3, "test_fraction", 0.3),
    ("normalise", "zscore", "normalize", "zscore"),
    ("on_error", "skip", "skip_broken", True),
    ("on_error", "raise", "skip_broken", False),
])
def test_old_names_are_renamed_with_a_warning_naming_the_new(old, value, new, expected):
    with pytest.warns(FutureWarning, match=rf"{old}= is deprecated.*write {new}="):
        out = rename_options({old: value}, "spec")
    assert out == {new: expected} and RENAMED[old] == new


def test_both_names_or_a_bad_on_error_are_refused():
    with pytest.raises(ConfigError, match="val_frac= and val_fraction= name the same option"):
        rename_options({"val_frac": 0.1, "val_fraction": 0.2})
    with pytest.raises(ConfigError, match="on_error='maybe' must be 'raise' or 'skip'.*skip_broken"):
        rename_options({"on_error": "maybe"})


def test_quiet_rename_for_recorded_specs(recwarn):
    assert rename_options({"normalise": "none"}, warn=False) == {"normalize": "none"}
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


def test_accept_renamed_wraps_a_data_kind():
    @accept_renamed
    def kind(path: str, val_fraction: float = 0.0, skip_broken: bool = False) -> tuple[float, bool]:
        return val_fraction, skip_broken

    with pytest.warns(FutureWarning) as record:
        assert kind("p", val_frac=0.5, on_error="skip") == (0.5, True)
    shown = " ".join(str(w.message) for w in record)
    assert "val_frac=" in shown and "write val_fraction=0.5" in shown and "write skip_broken=true" in shown
    assert kind("p", val_fraction=0.2) == (0.2, False)


@pytest.mark.parametrize(("value", "flag"), [(True, True), ("yes", True), ("1", True), ("off", False),
                                             ("", False), (False, False), ("none", False)])
def test_as_flag(value, flag):
    assert as_flag(value, "opt") is flag


def test_as_flag_refuses_other_values():
    with pytest.raises(ConfigError, match="skip_broken='sometimes' must be true or false"):
        as_flag("sometimes", "skip_broken")
