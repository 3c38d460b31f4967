"""Kubernetes resource quantities (``500m``, ``4Gi``, ``1e3``), parsed exactly and compared by value."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import total_ordering
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# The grammar of k8s.io/apimachinery/pkg/api/resource: a signed decimal number and an optional suffix.
_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
_QUANTITY = re.compile(_PATTERN)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_EXPECTED = "a Kubernetes quantity such as 500m, 2, 1.5, 4Gi or 1e3"
_MAX_EXPONENT = 100


@total_ordering
class Quantity:
    """A quantity keeps the text it was written as (for output) and its exact value (for comparison)."""

    __slots__ = ("text", "value")

    def __init__(self, text: str | int) -> None:
        raw = str(text).strip()
        match = _QUANTITY.match(raw)
        if match is None:
            raise ValueError(f"expected {_EXPECTED}, got {text!r}")
        suffix = match.group(3) or ""
        number = Decimal(raw[: len(raw) - len(suffix)] if suffix else raw)
        if suffix in _BINARY:
            value = number * _BINARY[suffix]
        elif suffix in _DECIMAL:
            value = number * _DECIMAL[suffix]
        else:  # exponent form: 1e3
            exponent = int(suffix[1:])
            if abs(exponent) > _MAX_EXPONENT:  # Kubernetes caps quantities far below this anyway
                raise ValueError(f"expected {_EXPECTED}, got {text!r}: exponent out of range")
            value = number.scaleb(exponent)
        if value < 0:
            raise ValueError(f"expected a quantity of at least 0, got {text!r}")
        self.text = raw
        self.value = value

    @property
    def milli(self) -> int:
        """The value in thousandths, rounded up, as Kubernetes does for CPU millicores."""
        return int((self.value * 1000).to_integral_value(rounding="ROUND_CEILING"))

    @property
    def whole(self) -> int:
        """The value rounded up to a whole number (bytes, devices)."""
        return int(self.value.to_integral_value(rounding="ROUND_CEILING"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.value == other.value

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Quantity({self.text!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def parse(value: Any) -> Quantity:
            if isinstance(value, Quantity):
                return value
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"expected {_EXPECTED}")
            if isinstance(value, float):
                value = repr(value)
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            parse, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "string", "pattern": _PATTERN},
                {"type": "integer", "minimum": 0},
                {"type": "number", "minimum": 0},
            ],
            "description": _EXPECTED,
        }
