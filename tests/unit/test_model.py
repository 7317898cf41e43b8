"""livefw.model: the records that replaced pydantic on the daemon's start path (issue 17).

What livefw relied on pydantic for must hold: lax conversions of untrusted mappings,
one error naming the key, ``extra`` and ``frozen``, dumps that load back the same.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import pytest

from livefw.config import Config
from livefw.kernel.sim.lfa import LfaState
from livefw.kernel.sim.machine import SimMachine
from livefw.model import Field, Model, ValidationError


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Part(Model, extra="forbid"):
    size: int
    label: str = ""


class Record(Model, extra="forbid"):
    count: int = 0
    ratio: float = Field(default=1.0, gt=0)
    flag: bool = False
    name: str = ""
    ids: tuple[int, ...] = ()
    tags: list[str] = Field(default_factory=list)
    colour: Colour = Colour.RED
    maybe: int | None = None
    style: Literal["v3", "rfc"] = "v3"
    parts: list[Part] = Field(default_factory=list)
    by_name: dict[str, Part] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class Frozen(Model, frozen=True):
    result: Literal["ok", "no"]
    reason: str = ""


class Open(Model, extra="allow", frozen=True):
    disabled: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"count": "12"}, "count", 12),
        ({"count": 3.0}, "count", 3),
        ({"count": True}, "count", 1),
        ({"ratio": "1.5"}, "ratio", 1.5),
        ({"ratio": 2}, "ratio", 2.0),
        ({"flag": "yes"}, "flag", True),
        ({"flag": 0}, "flag", False),
        ({"ids": [1, "2"]}, "ids", (1, 2)),
        ({"tags": ("a",)}, "tags", ["a"]),
        ({"colour": "blue"}, "colour", Colour.BLUE),
        ({"maybe": None}, "maybe", None),
        ({"name": Colour.RED}, "name", "red"),
    ],
)
def test_lax_conversions_as_pydantic_made_them(
    values: dict[str, Any], field: str, expected: Any
) -> None:
    value = getattr(Record.model_validate(values), field)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("values", "loc", "kind"),
    [
        ({"count": 1.5}, ("count",), "int_from_float"),
        ({"count": "many"}, ("count",), "int_parsing"),
        ({"count": None}, ("count",), "int_type"),
        ({"ratio": 0}, ("ratio",), "greater_than"),
        ({"ratio": "soon"}, ("ratio",), "float_parsing"),
        ({"flag": 2}, ("flag",), "bool_parsing"),
        ({"name": 7}, ("name",), "string_type"),
        ({"tags": "ab"}, ("tags",), "list_type"),
        ({"colour": "green"}, ("colour",), "enum"),
        ({"style": "v9"}, ("style",), "literal_error"),
        ({"parts": [{"size": 1}, {"size": "x"}]}, ("parts", 1, "size"), "int_parsing"),
        ({"parts": [{}]}, ("parts", 0, "size"), "missing"),
        ({"by_name": {"k": {"size": 1, "bogus": 2}}}, ("by_name", "k", "bogus"), "extra_forbidden"),
        ({"bogus": 1}, ("bogus",), "extra_forbidden"),
        ({"by_name": []}, ("by_name",), "dict_type"),
    ],
)
def test_a_bad_value_is_one_error_naming_where(
    values: dict[str, Any], loc: tuple[Any, ...], kind: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Record.model_validate(values)
    (error,) = info.value.errors()
    assert error["loc"] == loc
    assert error["type"] == kind
    assert error["msg"]
    assert isinstance(info.value, ValueError)


def test_not_a_mapping_and_not_json_are_errors() -> None:
    with pytest.raises(ValidationError, match="valid dictionary"):
        Record.model_validate(["count", 1])
    with pytest.raises(ValidationError) as info:
        Record.model_validate_json("{not json")
    assert info.value.errors()[0]["type"] == "json_invalid"


def test_dumps_load_back_the_same_record() -> None:
    record = Record(
        count=2,
        ids=[1],
        tags=["t"],
        colour="blue",
        parts=[{"size": 1}],
        by_name={"a": Part(size=3)},
    )
    python = record.model_dump()
    assert python["ids"] == (1,)
    assert python["parts"] == [{"size": 1, "label": ""}]
    as_json = record.model_dump(mode="json")
    assert as_json["ids"] == [1]
    assert as_json["colour"] == "blue"
    text = record.model_dump_json()
    assert json.loads(text) == as_json
    assert " " not in text  # compact, as machine.json is written
    assert Record.model_validate_json(text) == record
    assert Record.model_validate(as_json) == record
    assert "parts" not in json.loads(record.model_dump_json(exclude={"parts"}))


def test_defaults_are_not_shared_between_records() -> None:
    one, two = Record(), Record()
    one.tags.append("x")
    one.by_name["k"] = Part(size=1)
    assert two.tags == []
    assert two.by_name == {}


def test_frozen_records_refuse_assignment_and_hash() -> None:
    record = Frozen(result="ok")
    with pytest.raises(ValidationError, match="frozen"):
        record.result = "no"  # type: ignore[misc]
    assert hash(record) == hash(Frozen(result="ok"))
    assert record != Frozen(result="no")
    with pytest.raises(TypeError):
        hash(Record())


def test_extra_allow_keeps_the_unknown_keys() -> None:
    section = Open.model_validate({"disabled": ["pfru"], "fwctl": {"max": 1}})
    assert section.disabled == ("pfru",)
    assert section.model_extra == {"fwctl": {"max": 1}}
    assert section.model_dump()["fwctl"] == {"max": 1}
    assert Open().model_extra == {}


def test_model_copy_is_shallow_and_unvalidated() -> None:
    record = Record(tags=["a"])
    copy = record.model_copy(update={"count": 5})
    assert copy.count == 5
    assert copy.tags is record.tags
    assert record.count == 0


def test_fields_give_their_resolved_annotations() -> None:
    fields = Record.model_fields
    assert list(fields)[:3] == ["count", "ratio", "flag"]
    assert fields["count"].annotation is int
    assert fields["maybe"].annotation == int | None
    assert fields["parts"].annotation == list[Part]
    assert fields["count"].is_required() is False
    assert Part.model_fields["size"].is_required() is True


def test_records_keep_their_fields_in_slots() -> None:
    """The simulator holds ~5,000 records at 1,000 devices: no per-instance dict."""
    assert not hasattr(Part(size=1), "__dict__")
    with pytest.raises(AttributeError):
        Part(size=1).colour = "red"  # type: ignore[attr-defined]


def test_config_and_the_simulated_machine_round_trip(tmp_path: Any) -> None:
    assert Config.model_validate(Config().model_dump()) == Config()
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    again = SimMachine.load(str(tmp_path / "sim"))
    for name, component in machine.components.items():
        assert again.components[name].state == component.state, name
    lfa = machine.components["lfa"].state
    assert isinstance(lfa, LfaState)
    assert LfaState.model_validate_json(lfa.model_dump_json()) == lfa
