"""Validation of the resolvers' numeric hyper-parameters, in one place.

Every resolver checks its options in ``__init__`` with these two functions, so that all of
them accept the same values: any real number (:class:`numbers.Real`: ``int``, ``float``,
:class:`fractions.Fraction`, NumPy scalars such as ``np.float32``) for a real option, any
integer (:class:`numbers.Integral`, ``np.int64`` included) for an integer one, never a
``bool`` (``k=True`` is a mistake, not ``k=1.0``), and always store a plain Python ``float``
or ``int``.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, overload

__all__ = ["integer_option", "real_option"]


@overload
def real_option(
    name: str,
    value: object,
    *,
    minimum: float | None = ...,
    maximum: float | None = ...,
    above_minimum: bool = ...,
    below_maximum: bool = ...,
    note: str = ...,
    optional: Literal[False] = ...,
) -> float: ...
@overload
def real_option(
    name: str,
    value: object,
    *,
    minimum: float | None = ...,
    maximum: float | None = ...,
    above_minimum: bool = ...,
    below_maximum: bool = ...,
    note: str = ...,
    optional: bool,
) -> float | None: ...
def real_option(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above_minimum: bool = False,
    below_maximum: bool = False,
    note: str = "",
    optional: bool = False,
) -> float | None:
    """``value`` as a finite Python ``float`` within the bounds, or an error naming ``name``.

    Args:
        name: the option's name, as the user passes it (``"lr"``).
        value: what the user passed.
        minimum: the smallest value allowed (``None``: no lower bound).
        maximum: the largest value allowed (``None``: no upper bound).
        above_minimum: whether ``minimum`` itself is excluded (``value > minimum``).
        below_maximum: whether ``maximum`` itself is excluded (``value < maximum``).
        note: appended to the expected range in the message (``"paper 0.9"``).
        optional: whether ``None`` is allowed too (it is returned as it is).

    Returns:
        ``float(value)``, or ``None`` for an optional option given ``None``.

    Raises:
        TypeError: ``value`` is a ``bool`` or not a real number (a string, a tensor, None).
        ValueError: ``value`` is NaN, infinite, or outside the bounds.

    Example:
        >>> real_option("beta", 0.5, minimum=0, maximum=1, below_maximum=True)
        0.5
        >>> real_option("beta", 1.0, minimum=0, maximum=1, below_maximum=True, note="paper 0.9")
        Traceback (most recent call last):
            ...
        ValueError: Invalid beta: 1.0 (expected a number in [0, 1); paper 0.9)
    """
    if optional and value is None:
        return None
    expected = _expected_real(minimum, maximum, above_minimum, below_maximum)
    if optional:
        expected = f"None or {expected}"
    if note:
        expected = f"{expected}; {note}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} (expected {expected})")
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected})") from None
    if not (
        math.isfinite(number)
        and (minimum is None or number > minimum or (number == minimum and not above_minimum))
        and (maximum is None or number < maximum or (number == maximum and not below_maximum))
    ):
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected})")
    return number


@overload
def integer_option(
    name: str,
    value: object,
    *,
    minimum: int | None = ...,
    maximum: int | None = ...,
    optional: Literal[False] = ...,
) -> int: ...
@overload
def integer_option(
    name: str,
    value: object,
    *,
    minimum: int | None = ...,
    maximum: int | None = ...,
    optional: bool,
) -> int | None: ...
def integer_option(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    optional: bool = False,
) -> int | None:
    """``value`` as a Python ``int`` within the bounds, or an error naming ``name``.

    Args:
        name: the option's name, as the user passes it (``"horizon"``).
        value: what the user passed.
        minimum: the smallest value allowed (``None``: no lower bound).
        maximum: the largest value allowed (``None``: no upper bound).
        optional: whether ``None`` is allowed too (it is returned as it is).

    Returns:
        ``int(value)``, or ``None`` for an optional option given ``None``.

    Raises:
        TypeError: ``value`` is a ``bool`` or not an integer (``2.0`` included).
        ValueError: ``value`` is below ``minimum`` or above ``maximum``.

    Example:
        >>> integer_option("horizon", 5, minimum=1)
        5
        >>> integer_option("horizon", 0, minimum=1)
        Traceback (most recent call last):
            ...
        ValueError: Invalid horizon: 0 (expected an int >= 1)
    """
    if optional and value is None:
        return None
    expected = _expected_integer(minimum, maximum)
    if optional:
        expected = f"None or {expected}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid {name}: {value!r} (expected {expected})")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected})")
    return number


def _expected_integer(minimum: int | None, maximum: int | None) -> str:
    """The expected range in words: ``an int >= 1``, ``an int in [0, 9]``."""
    if minimum is not None and maximum is not None:
        return f"an int in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an int >= {minimum}"
    if maximum is not None:
        return f"an int <= {maximum}"
    return "an int"


def _expected_real(
    minimum: float | None, maximum: float | None, above_minimum: bool, below_maximum: bool
) -> str:
    """The expected range in words: ``a finite number > 0``, ``a number in [0, 1)``."""
    if minimum is not None and maximum is not None:
        left = "(" if above_minimum else "["
        right = ")" if below_maximum else "]"
        return f"a number in {left}{_bound(minimum)}, {_bound(maximum)}{right}"
    if minimum is not None:
        return f"a finite number {'>' if above_minimum else '>='} {_bound(minimum)}"
    if maximum is not None:
        return f"a finite number {'<' if below_maximum else '<='} {_bound(maximum)}"
    return "a finite number"


def _bound(bound: float) -> str:
    """A bound as written in a message: ``0`` and ``1`` rather than ``0.0`` and ``1.0``."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e16 else repr(bound)
