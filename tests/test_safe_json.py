"""`orchestrator.safe_json`: the one parser for JSON from outside and the one check of what the
database can store."""

from __future__ import annotations

import json

import pytest

from orchestrator import safe_json
from orchestrator.safe_json import MAX_DEPTH, JsonInputError, TooManyItems, depth, load_array, loads, storage_errors


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(("text", "expected"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[", "]]]"]', 1),
    ('["\\"[[", "\\\\", [[]]]', 3), ('"\\\\\\"[["', 0), (_nested(5000), 5000),
])
def test_depth_counts_brackets_outside_strings_only(text: str, expected: int) -> None:
    assert depth(text) == expected


def test_depth_needs_no_recursion_and_no_memory_per_character() -> None:
    assert depth(_nested(1_000_000)) == 1_000_000
    assert depth(json.dumps("\\" * 2_000_000)) == 0


@pytest.mark.parametrize("text", [_nested(MAX_DEPTH + 1), _nested(100_000), '{"a":' * 1000 + "1" + "}" * 1000])
def test_loads_refuses_nesting_past_the_limit_by_name(text: str) -> None:
    with pytest.raises(JsonInputError, match=f"at most {MAX_DEPTH} levels"):
        loads(text)


def test_loads_takes_nesting_up_to_the_limit() -> None:
    assert loads(_nested(MAX_DEPTH)) is not None


@pytest.mark.parametrize(("text", "reason"), [
    ("NaN", "NaN is not valid JSON"), ('{"x": -Infinity}', "-Infinity is not valid JSON"),
    ("[1e400]", "1e400 is out of range"), ("-1e999", "out of range"), ("1" * 5000, "digits"),
    ("", "Expecting value"), ("[1,]", "Expecting value"), ("1 2", "Extra data"),
])
def test_loads_refuses_what_is_not_json(text: str, reason: str) -> None:
    with pytest.raises(JsonInputError, match=reason):
        loads(text)


def test_a_syntax_error_names_its_line_and_column() -> None:
    with pytest.raises(JsonInputError) as caught:
        loads('{\n  "a": 1,\n  "b": }')
    assert (caught.value.line, caught.value.column) == (3, 8)


def test_load_array_stops_at_the_first_item_past_the_limit() -> None:
    assert load_array(" [1, {\"a\": [2]}, \"x,]\" ] ", 3) == [1, {"a": [2]}, "x,]"]
    assert load_array("[]", 0) == []
    with pytest.raises(TooManyItems, match="more than 2"):
        load_array("[1, 2, 3" + ", 4" * 1_000_000, 2)  # never parsed: the body is not even closed


def test_load_array_returns_an_item_nested_too_deep_as_its_error_in_place() -> None:
    items = load_array(f'[1, {_nested(200)}, {{"a": "[[["}}, "\\"]"]', 10)
    assert items[0] == 1 and items[2:] == [{"a": "[[["}, '"]']
    assert isinstance(items[1], JsonInputError) and "nested 200 levels" in items[1].reason


@pytest.mark.parametrize(("text", "error"), [("{}", ValueError), ("[1 2]", JsonInputError), ("[1] x", JsonInputError),
                                             ("[NaN]", JsonInputError), ("[1,", JsonInputError)])
def test_load_array_refuses_what_is_no_json_array(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_array(text, 10)


@pytest.mark.parametrize(("value", "path", "reason"), [
    ({"a\x00b": 1}, "v", "Key 'a\\x00b'"), ({"a.b": 1}, "v", "no '.'"), ({"$a": 1}, "v", "leading '$'"),
    ({1: 1}, "v", "Key 1"), ({"\ud800": 1}, "v", "lone surrogate"),
    ({"k": "a\x00"}, "v.k", "NUL"), ({"k": ["\udfff"]}, "v.k.0", "lone surrogate"),
    ([[1]], "v.0", "Arrays directly inside arrays"), ({"k": float("nan")}, "v.k", "finite"),
    ({"k": 2**63}, "v.k", "64 bits"), ({"k": -(2**63) - 1}, "v.k", "64 bits"),
])
def test_storage_errors_name_the_path_and_the_reason(value: object, path: str, reason: str) -> None:
    errors = storage_errors(value, "v")
    assert list(errors) == [path] and reason in " ".join(errors[path])


def test_storage_errors_take_what_the_database_stores() -> None:
    assert storage_errors({"a": [1, {"b": [2**63 - 1, -(2**63), "é", None, True, 1.5]}], "$": None} | {"x$": 1}, "v") == {
        "v": ["Key '$' must be a string with no '.', no leading '$', no NUL and no lone surrogate."]}
    assert storage_errors({"a": [1, {"b": [2**63 - 1, -(2**63), "é 🙂", None, True, 1.5]}], "x$": 1}, "v") == {}


def test_free_form_errors_add_a_size_limit() -> None:
    assert safe_json.free_form_errors({"a": "x" * 1000}, "ideaJson") == {}
    errors = safe_json.free_form_errors({"a": "x" * safe_json.MAX_FREE_FORM_BYTES}, "ideaJson")
    assert "at most 262144" in errors["ideaJson"][0]
