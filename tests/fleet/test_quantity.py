"""Kubernetes quantities: parsed exactly, compared by value, bad ones refused with what was expected."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from fleet.quantity import Quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Decimal(0)),
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("2.", Decimal(2)),
        ("+3", Decimal(3)),
        ("100n", Decimal("1e-7")),
        ("250u", Decimal("0.00025")),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("4G", Decimal(4 * 10**9)),
        ("1T", Decimal(10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),
        ("1Ki", Decimal(1024)),
        ("128Mi", Decimal(128 * 2**20)),
        ("4Gi", Decimal(4 * 2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1Ti", Decimal(2**40)),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("5e-3", Decimal("0.005")),
        ("12e+2", Decimal(1200)),
        (" 2 ", Decimal(2)),
    ],
)
def test_parses_exactly(text: str, value: Decimal) -> None:
    assert Quantity(text).value == value


def test_keeps_the_text_it_was_written_as() -> None:
    assert str(Quantity("1.5Gi")) == "1.5Gi"
    assert str(Quantity(" 500m ")) == "500m"
    assert repr(Quantity("4Gi")) == "Quantity('4Gi')"
    assert str(Quantity(8)) == "8"


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("500m", "1"),
        ("999m", "1"),
        ("1G", "1Gi"),
        ("1000Mi", "1Gi"),
        ("1Gi", "1.1G"),
        ("1k", "1Ki"),
        ("1n", "1u"),
        ("0", "1n"),
        ("1e2", "1e3"),
        ("1023Ki", "1Mi"),
    ],
)
def test_compares_by_value(smaller: str, larger: str) -> None:
    low, high = Quantity(smaller), Quantity(larger)
    assert low < high
    assert high > low
    assert low <= high
    assert high >= low
    assert low != high
    assert not high < low


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("1e3", "1k"),
        ("0.5", "500m"),
        ("1", "1000m"),
        ("1Ki", "1024"),
        ("1G", "1000M"),
        ("1.5Gi", "1536Mi"),
        ("0", "0m"),
        ("1e-3", "1m"),
        ("2", "+2"),
    ],
)
def test_equal_values_are_equal_and_hash_alike(one: str, other: str) -> None:
    assert Quantity(one) == Quantity(other)
    assert hash(Quantity(one)) == hash(Quantity(other))
    assert len({Quantity(one), Quantity(other)}) == 1
    assert Quantity(one) <= Quantity(other) <= Quantity(one)


def test_sorts_by_value() -> None:
    written = ["1Gi", "500m", "1G", "2", "1e3", "100Mi"]
    ordered = [str(q) for q in sorted(Quantity(text) for text in written)]
    assert ordered == ["500m", "2", "1e3", "100Mi", "1G", "1Gi"]


def test_is_not_equal_to_other_types() -> None:
    assert Quantity("1") != 1
    assert Quantity("1") != "1"


@pytest.mark.parametrize(
    ("text", "milli", "whole"),
    [
        ("500m", 500, 1),
        ("2", 2000, 2),
        ("1.5", 1500, 2),
        ("0.0001", 1, 1),  # Kubernetes rounds CPU up to a whole millicore
        ("1Gi", 2**30 * 1000, 2**30),
        ("0", 0, 0),
        ("1u", 1, 1),
    ],
)
def test_rounds_up_to_millis_and_wholes(text: str, milli: int, whole: int) -> None:
    assert Quantity(text).milli == milli
    assert Quantity(text).whole == whole


@pytest.mark.parametrize(
    "text",
    [
        "4 Gi",
        "",
        " ",
        "Gi",
        "1gi",
        "1GB",
        "1KI",
        "1K",  # the decimal kilo is lower-case k
        "1mi",
        "1e3m",  # an exponent takes no suffix
        "1.2.3",
        "1,5",
        "0x10",
        "one",
        "1e",
        "∞",
        "NaN",
        "1_000",
    ],
)
def test_refuses_what_kubernetes_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a Kubernetes quantity such as 500m, 2, 1\.5, 4Gi or 1e3"):
        Quantity(text)


@pytest.mark.parametrize("text", ["-1", "-500m", "-1Gi", "-1e3"])
def test_refuses_negative_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="expected a quantity of at least 0"):
        Quantity(text)


def test_negative_zero_is_zero() -> None:
    assert Quantity("-0") == Quantity("0")


class _Request(BaseModel):
    cpu: Quantity
    memory: Quantity = Quantity("0")


@pytest.mark.parametrize(
    ("given", "value"),
    [
        ("500m", Decimal("0.5")),
        (2, Decimal(2)),
        (1.5, Decimal("1.5")),
        (0.1, Decimal("0.1")),
        ("1e3", Decimal(1000)),
    ],
)
def test_a_model_field_accepts_strings_and_numbers(given: object, value: Decimal) -> None:
    assert _Request.model_validate({"cpu": given}).cpu.value == value


@pytest.mark.parametrize("given", [True, None, [1], {"v": 1}, "4 Gi", -1, float("inf"), float("nan")])
def test_a_model_field_refuses_other_values(given: object) -> None:
    with pytest.raises(ValidationError) as raised:
        _Request.model_validate({"cpu": given})
    (error,) = raised.value.errors()
    assert error["loc"] == ("cpu",)
    assert "expected a" in error["msg"]


def test_a_model_field_serializes_as_written() -> None:
    request = _Request.model_validate({"cpu": "1.5", "memory": "4Gi"})
    assert request.model_dump(mode="json") == {"cpu": "1.5", "memory": "4Gi"}
    assert _Request.model_validate(request.model_dump(mode="json")) == request
