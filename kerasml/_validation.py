"""Argument checks shared by every layer of kerasml (layer L0: imports nothing from kerasml).

Errors follow Keras' wording: what was wrong, the accepted values, what was received, and the
closest accepted value when there is one.
"""

import difflib


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
