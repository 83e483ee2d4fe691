from decimal import Decimal

import pytest

from webhook.engine.units import parse_duration, parse_quantity

GI = 2**30


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2Gi", 2 * GI),
        ("2048Mi", 2 * GI),
        ("2147483648", 2 * GI),
        ("1.5Gi", Decimal("1.5") * GI),
        ("500M", 500 * 10**6),
        ("100m", Decimal("0.1")),
        ("1e3", 1000),
        ("1E3", 1000),
        (2147483648, 2 * GI),
    ],
)
def test_quantities_compare_by_value(text: object, value: object) -> None:
    assert parse_quantity(text) == value


def test_same_amount_in_different_units_is_equal() -> None:
    assert parse_quantity("2Gi") == parse_quantity("2048Mi") == parse_quantity("2147483648")
    assert parse_quantity("2G") < parse_quantity("2Gi")


@pytest.mark.parametrize("bad", ["", "Gi", "2GB", "two", "2 Gi", None, True, [], "1.2.3"])
def test_bad_quantities_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m30s", 90), ("1h", 3600), ("500ms", Decimal("0.5")), ("0", 0), ("1.5h", 5400)],
)
def test_go_durations(text: str, seconds: object) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "m5", "1h 30m", "1d", None, 5])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)
