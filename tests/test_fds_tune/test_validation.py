"""fds_tune.validation: every helper accepts what its rule allows and refuses the rest with
``key: got VALUE; must be RULE``."""
import math

import pytest

from fds_tune.validation import (
    check, check_choice, check_int, check_kinds, check_number, check_optional, check_range, fail, is_int, is_number,
)

KINDS = ("lr", "momentum")


def test_fail_raises_the_one_form():
    with pytest.raises(ValueError, match=r"^lr: got 'fast'; must be a number$"):
        fail("lr", "fast", "a number")


@pytest.mark.parametrize(("value", "int_", "number"), [
    (3, True, True),
    (-1, True, True),
    (2.5, False, True),
    (math.inf, False, True),
    (math.nan, False, True),  # a number; check_number refuses it
    (True, False, False),
    (False, False, False),
    ("3", False, False),
    (None, False, False),
])
def test_is_int_and_is_number_refuse_bools(value, int_, number):
    assert (is_int(value), is_number(value)) == (int_, number)


def test_check_returns_the_value_or_fails():
    assert check("k", [1], True, "anything") == [1]
    with pytest.raises(ValueError, match=r"^k: got \[1\]; must be empty$"):
        check("k", [1], False, "empty")


@pytest.mark.parametrize(("kwargs", "value"), [({}, -5), ({"minimum": 1}, 1), ({"maximum": 3}, 3), ({"minimum": 1, "maximum": 3}, 2)])
def test_check_int_accepts_within_closed_bounds(kwargs, value):
    assert check_int("n", value, **kwargs) == value


@pytest.mark.parametrize(("value", "kwargs", "match"), [
    (True, {}, r"^n: got True; must be an int$"),
    (2.0, {}, r"^n: got 2.0; must be an int$"),
    ("2", {}, r"^n: got '2'; must be an int$"),
    (0, {"minimum": 1}, r"^n: got 0; must be an int >= 1$"),
    (4, {"maximum": 3}, r"^n: got 4; must be an int <= 3$"),
    (4, {"minimum": 1, "maximum": 3}, r"^n: got 4; must be an int >= 1 and <= 3$"),
    (0, {"minimum": 1, "rule": "an int >= 1 (one batch)"}, r"^n: got 0; must be an int >= 1 \(one batch\)$"),
])
def test_check_int_refuses(value, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_int("n", value, **kwargs)


@pytest.mark.parametrize(("value", "kwargs"), [
    (0.5, {}),
    (3, {}),  # an int is a number
    (0.0, {"low": 0}),  # closed bounds include themselves
    (1.0, {"high": 1}),
    (math.inf, {"finite": False}),
    (math.inf, {"low": 1, "low_open": True, "finite": False}),
])
def test_check_number_accepts(value, kwargs):
    assert check_number("x", value, **kwargs) == value


@pytest.mark.parametrize(("value", "kwargs", "match"), [
    (True, {}, r"^x: got True; must be a finite number$"),
    ("0.1", {}, r"^x: got '0.1'; must be a finite number$"),
    (math.nan, {}, r"^x: got nan; must be a finite number$"),
    (math.nan, {"finite": False}, r"^x: got nan; must be a number$"),  # NaN is refused even when inf is allowed
    (math.inf, {}, r"^x: got inf; must be a finite number$"),
    (-math.inf, {"finite": False, "low": 0}, r"^x: got -inf; must be a number >= 0$"),
    (0, {"low": 0, "low_open": True}, r"^x: got 0; must be a finite number > 0$"),
    (1, {"high": 1, "high_open": True}, r"^x: got 1; must be a finite number < 1$"),
    (-0.1, {"low": 0, "high": 1}, r"^x: got -0.1; must be a finite number >= 0 and <= 1$"),
    (1, {"low": 0, "high": 1, "low_open": True, "high_open": True, "rule": "a number in (0, 1)"},
     r"^x: got 1; must be a number in \(0, 1\)$"),
])
def test_check_number_refuses(value, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_number("x", value, **kwargs)


def test_check_choice():
    assert check_choice("rule", "sign", ("sign", "adam")) == "sign"
    assert check_choice("rule", "adam", {"sign": 1, "adam": 2}) == "adam"  # a dict's keys
    with pytest.raises(ValueError, match=r"^rule: got 'sgd'; must be one of \['sign', 'adam'\]$"):
        check_choice("rule", "sgd", ("sign", "adam"))
    with pytest.raises(ValueError, match=r"^rule: got \['sign'\]; must be one of \['sign'\]$"):
        check_choice("rule", ["sign"], {"sign"})  # unhashable: refused, not a TypeError


def test_check_kinds():
    assert check_kinds("init", {"lr": 0.1, "momentum": 0.9}, KINDS) == {"lr": 0.1, "momentum": 0.9}
    assert check_kinds("init", {"lr": 0.1}, KINDS, exact=False) == {"lr": 0.1}
    with pytest.raises(ValueError, match=r"^init: got \[0.1\]; must be a dict keyed by kinds \['lr', 'momentum'\]$"):
        check_kinds("init", [0.1], KINDS)
    with pytest.raises(ValueError, match=r"^init\['beta'\]: got 2; must be given for a known kind, one of \['lr', 'momentum'\]$"):
        check_kinds("init", {"lr": 0.1, "beta": 2}, KINDS, exact=False)  # unknown kinds are refused either way
    with pytest.raises(ValueError, match=r"^init: got \{'lr': 0.1\}; must be a dict with a value for each of \['lr', 'momentum'\]$"):
        check_kinds("init", {"lr": 0.1}, KINDS)


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    ((0, 1), {}, (0.0, 1.0)),
    ([0.5, math.inf], {"low": 0}, (0.5, math.inf)),  # high defaults to inf, inclusive
    ((0, 0.99), {"low": 0, "high": 0.99}, (0.0, 0.99)),  # both bounds inclusive
])
def test_check_range_accepts_and_returns_floats(value, kwargs, expected):
    got = check_range("bounds", value, **kwargs)
    assert got == expected and all(type(v) is float for v in got)


@pytest.mark.parametrize(("value", "kwargs", "match"), [
    ((1, 1), {}, r"^bounds: got \(1, 1\); must be a pair \[low, high\] of numbers with -inf <= low < high <= inf$"),
    ((2, 1), {}, r"^bounds: got \(2, 1\); must be a pair"),
    ((-1, 1), {"low": 0}, r"^bounds: got \(-1, 1\); must be a pair \[low, high\] of numbers with 0 <= low < high <= inf$"),
    ((0, 2), {"high": 1}, r"^bounds: got \(0, 2\); must be a pair \[low, high\] of numbers with -inf <= low < high <= 1$"),
    ((0, math.nan), {}, r"^bounds: got \(0, nan\); must be a pair"),
    ((False, 1), {}, r"^bounds: got \(False, 1\); must be a pair"),
    (("0", "1"), {}, r"^bounds: got \('0', '1'\); must be a pair"),
    ((0, 1, 2), {}, r"^bounds: got \(0, 1, 2\); must be a pair"),
    (1.0, {}, r"^bounds: got 1.0; must be a pair"),
    ({0: 1}, {}, r"^bounds: got \{0: 1\}; must be a pair"),
])
def test_check_range_refuses(value, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_range("bounds", value, **kwargs)


def test_check_optional_passes_none_and_checks_the_rest():
    assert check_optional("clamp", None, check_number, low=0, low_open=True) is None
    assert check_optional("clamp", 3.0, check_number, low=0, low_open=True) == 3.0
    assert check_optional("group", 2, check_int, 1) == 2  # positional arguments reach the checker
    with pytest.raises(ValueError, match=r"^group: got 0; must be an int >= 1 or None$"):
        check_optional("group", 0, check_int, 1, rule="an int >= 1 or None")
    with pytest.raises(ValueError, match=r"^clamp: got True; must be a finite number > 0$"):
        check_optional("clamp", True, check_number, low=0, low_open=True)
