"""Column kinds, statistics and vocabularies from the train split (pipeline/etl/columns.py)."""

from __future__ import annotations

import math

import pytest

from pipeline.etl import columns


def test_numbers_with_missing_cells_are_numeric_with_train_statistics_of_the_present_ones() -> None:
    cells = ["1.5", "NA", "2.5", "", "nan", "null", "?", "3.5", " N/A "]
    column = columns.infer("w", "w", cells)
    assert (column.kind, column.missing) == ("numeric", 6)
    assert column.mean == pytest.approx(2.5) and column.variance == pytest.approx(2 / 3)
    assert column.width == 2  # the value and its missing indicator
    assert math.isnan(float(column.value("NA"))) and column.value("7") == 7.0
    assert math.isnan(float(column.value("seven")))  # a validation cell that is no number counts as missing


def test_text_is_categorical_with_a_vocabulary_by_count_and_missing_as_a_category_of_its_own() -> None:
    cells = ["Biscoe", "Dream", "Biscoe", "NA", "Torgersen", "Biscoe", "Dream"]
    column = columns.infer("island", "island", cells)
    assert column.kind == "categorical" and column.missing == 1
    assert column.vocabulary == (("Biscoe", 3), ("Dream", 2), ("", 1), ("Torgersen", 1))
    assert column.width == 5  # four categories and the out-of-vocabulary slot
    assert column.value("NA") == "" and column.value(" Dream ") == "Dream"


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        (["Anvers"] * 30, "the same value in every row: 'Anvers'"),
        ([str(i) for i in range(100, 140)], "consecutive whole numbers unique to each row: an id"),
        ([f"N{i}A{i % 2}" for i in range(40)], "text unique to each row: a name, an id or free text"),
        ([f"2007-11-{1 + i % 28:02d}" for i in range(40)], "dates or times"),
        (["NA"] * 30, "no value in the train split"),
    ],
    ids=["constant", "id", "name", "dates", "empty"],
)
def test_columns_that_cannot_help_are_ignored_with_the_reason(cells: list[str], reason: str) -> None:
    column = columns.infer("c", "c", cells)
    assert column.kind == "ignore" and column.width == 0
    assert reason in column.reason and "ignored" in column.describe()


def test_integer_codes_are_numbers_unless_the_user_says_categorical() -> None:
    cells = ["1", "2", "3", "2", "1", "3"]
    assert columns.infer("zip", "zip", cells).kind == "numeric"
    told = columns.infer("zip", "zip", cells, "categorical")
    assert told.kind == "categorical" and told.reason == "--CreateShards-columns says so"
    assert {value for value, _ in told.vocabulary} == {"1", "2", "3"}
    assert columns.infer("zip", "zip", cells, "ignore").kind == "ignore"
    with pytest.raises(ValueError, match=r"column 'island' is set numeric .* it holds 'Biscoe', not a number"):
        columns.infer("island", "island", ["Biscoe", "1"], "numeric")


def test_overrides_name_real_columns_and_kinds() -> None:
    header = ("a", "b")
    columns.check_overrides({"a": "categorical"}, header, "y")
    with pytest.raises(ValueError, match=r"names 'c', which is not a column\. Its columns: a, b"):
        columns.check_overrides({"c": "ignore"}, header, "y")
    with pytest.raises(ValueError, match=r"the label column 'y'"):
        columns.check_overrides({"y": "ignore"}, (*header, "y"), "y")
    with pytest.raises(ValueError, match=r"'a' must be one of numeric, categorical, ignore\. Received: 'text'"):
        columns.check_overrides({"a": "text"}, header, "y")


def test_feature_names_are_identifiers_unique_and_clear_of_the_reserved_ones() -> None:
    names = columns.feature_names(["Culmen Length (mm)", "label", "Label", "2nd", "line"], reserved=("label", "line"))
    assert names == ["culmen_length_mm", "label_2", "label_3", "c_2nd", "line_2"]
