"""The checks of a dataset option's value, with messages naming the dataset, the option and what it accepts.

Kept free of ``datasets`` and the image libraries: the command line checks split options with them before it
imports anything heavy (:mod:`.orl_split`).
"""

from __future__ import annotations

import numbers


def as_int(value):
    """``value`` as a plain ``int`` when it is an integer (numpy's too, not ``bool``), else unchanged."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def listed(values) -> str:
    return ", ".join(repr(value) if isinstance(value, str) else str(value) for value in values)


def require_choice(dataset: str, option: str, value, allowed, what: str) -> None:
    """Raise naming the option, the value, the allowed values and the dataset unless ``value`` is allowed."""
    if not any(type(as_int(value)) is type(choice) and value == choice for choice in allowed):  # 2.0, True: not 2
        raise ValueError(
            f"{dataset}: {option}={value!r} is not allowed; {option} ({what}) must be one of {listed(allowed)}."
        )


def require_count(dataset: str, option: str, value, what: str, minimum: int = 1, optional: bool = False) -> None:
    """Raise unless ``value`` is an integer >= ``minimum`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if type(as_int(value)) is not int or value < minimum:  # bool is an int subclass: refused
        allowed = f"an integer >= {minimum}" + (" or None (all)" if optional else "")
        raise ValueError(f"{dataset}: {option}={value!r} is not allowed; {option} ({what}) must be {allowed}.")
