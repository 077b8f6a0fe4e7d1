"""Argument checks shared by every layer of kerasml (layer L0: imports nothing from kerasml).

Errors follow Keras' wording: what was wrong, the accepted values, what was received, and the
closest accepted value when there is one.
"""

import difflib
import numbers


def did_you_mean(word, candidates, cutoff=0.6, *, key=None):
    """The closest candidate to a misspelt word, as a sentence to append to an error message.

    Args:
        word: the value that was not recognised.
        candidates: the accepted values (an iterable; a mapping gives its keys).
        cutoff: similarity in ``[0, 1]`` below which nothing is suggested (as in
            `difflib.get_close_matches`). Defaults to ``0.6``.
        key: a function giving the spelling to compare, applied to the word and to each
            candidate (e.g. one that drops case and ``_``); the suggestion is the candidate
            itself. Defaults to ``None`` (compare ``str(...)``).

    Returns:
        ``" Did you mean 'x'?"`` (with a leading space), or ``""`` when no candidate is close enough.

    Example:

    >>> did_you_mean("tripplet", ["npair", "triplet"])
    " Did you mean 'triplet'?"
    >>> did_you_mean("xyz", ["npair", "triplet"])
    ''
    >>> did_you_mean("mobilenet-v", ["MobileNetV2"], key=lambda s: s.replace("-", "").lower())
    " Did you mean 'MobileNetV2'?"
    """
    spell = str if key is None else (lambda value: str(key(value)))
    shown = {}
    for candidate in candidates:
        shown.setdefault(spell(candidate), candidate)
    close = difflib.get_close_matches(spell(word), list(shown), n=1, cutoff=cutoff)
    return f" Did you mean {shown[close[0]]!r}?" if close else ""


def check_choice(argument, value, choices):
    """Raise a ValueError in Keras' form unless ``value`` is one of ``choices``.

    Args:
        argument: the argument's name, as the caller wrote it (e.g. ``"mining"``).
        value: the value received.
        choices: the accepted values (a tuple or list).

    Raises:
        ValueError: ``Invalid value for argument `mining`. Expected one of ('structured', 'all').
            Received: mining='structred'. Did you mean 'structured'?``

    Example:

    >>> check_choice("distance", "squared", ("squared", "euclidean"))
    >>> check_choice("distance", "cosine", ("squared", "euclidean"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for argument `distance`. Expected one of ('squared', 'euclidean'). Received: ...
    """
    try:
        accepted = value in choices
    except TypeError:  # an unhashable value against a set or dict of choices
        accepted = False
    if not accepted:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of {tuple(choices)}. "
            f"Received: {argument}={value!r}.{hint}"
        )


def check_int(argument, value, owner=None, minimum=1, allow_none=False):
    """Return ``value`` as an int, or raise a ValueError in Keras' form unless it is an int >= ``minimum``.

    ``bool`` and non-integral numbers (``2.5``, ``"3"``) are refused rather than truncated.

    Args:
        argument: the argument's name, as the caller wrote it (e.g. ``"memory_size"``).
        value: the value received.
        owner: the class or function the argument belongs to, named in the message.
            Defaults to ``None`` (not named).
        minimum: the smallest accepted value. Defaults to ``1``.
        allow_none: accept ``None`` (and return it). Defaults to ``False``.

    Returns:
        ``int(value)``, or ``None`` when ``value`` is ``None`` and ``allow_none``.

    Raises:
        ValueError: ``Invalid value for argument `bins` of FastAPLoss. Expected an int >= 1.
            Received: bins=0``

    Example:

    >>> check_int("size", 4, "MemoryBank")
    4
    >>> check_int("size", 2.5, "MemoryBank")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for argument `size` of MemoryBank. Expected an int >= 1. Received: size=2.5
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        of = f" of {owner}" if owner else ""
        alternative = " or None" if allow_none else ""
        raise ValueError(
            f"Invalid value for argument `{argument}`{of}. Expected an int >= {minimum}{alternative}. "
            f"Received: {argument}={value!r}"
        )
    return int(value)
