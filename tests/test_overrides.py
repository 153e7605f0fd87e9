"""One KEY=VALUE parser: ``kneeseg --set``, ``kneeseg bench table1 --set`` and the MONAI Label app's
``--set`` all type their values through :func:`kneeseg.workflows.parse_overrides`."""

from __future__ import annotations

import pytest

from kneeseg.cli import main
from kneeseg.workflows import parse_overrides, parse_value


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("8", 8), ("0.5", 0.5), ("1e-3", 0.001), ("true", True), ("False", False), ("TRUE", True),
        ("null", None), ("None", None), ("[96, 96]", [96, 96]), ("(1, 2)", (1, 2)), ('"csam"', "csam"),
        ("'csam'", "csam"), ("csam_unet", "csam_unet"), ('{"a": 1}', {"a": 1}), ("", ""),
    ],
)  # fmt: skip
def test_values_are_typed_json_first_then_python_literal_then_text(raw, expected):
    value = parse_value(raw)
    assert value == expected and type(value) is type(expected)


def test_keys_are_stripped_and_later_items_win():
    assert parse_overrides([" width =8", "amp=false", "width=16", "train#dataset#cache_rate=0.5"]) == {
        "width": 16, "amp": False, "train#dataset#cache_rate": 0.5}  # fmt: skip


@pytest.mark.parametrize("item", ["width", "=8", " =8"])
def test_an_item_without_key_or_equals_sign_is_refused_by_name(item):
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_overrides([item])


def test_the_cli_reports_a_bad_set_item_as_a_usage_error(tmp_path, capsys):
    assert main(["train", "--set", "max_epochs", "--output-dir", str(tmp_path)]) == 2
    assert "'max_epochs' is not KEY=VALUE" in capsys.readouterr().err


def test_typed_key_value_options_name_the_option(tmp_path, capsys):
    args = ["data", "manifest", str(tmp_path), "--out", str(tmp_path / "m.json"), "--hold-out", "training=-3"]
    assert main(args) == 2
    assert "--hold-out expects KEY=N (e.g. training=9), got 'training=-3'" in capsys.readouterr().err
