"""Text normalisation and the seen/unseen text split rule.

Every transcript in the corpus -- generated training text and the real prompts'
transcripts alike -- goes through :func:`normalize_text`, so that training and
test text follow the same conventions and use only the flagship's character
vocabulary: space, apostrophe and ``a``-``z``. The TTS voices are fed the
*normalised* text, so what they say is exactly the transcript.

Conventions (documented in CORPUS.md):

* numbers of one to four digits without a leading zero are read as cardinals
  (``12`` -> "twelve", ``2024`` -> "two thousand twenty four"); longer numbers and
  numbers with a leading zero are read digit by digit (``0800`` -> "zero eight zero zero");
* ``1st``, ``22nd`` ... are ordinals; ``9:30`` is "nine thirty", ``9:05`` "nine oh five",
  ``9:00`` "nine o'clock"; ``$5.20`` is "five dollars and twenty cents";
* ``#`` -> "pound", ``*`` -> "star", ``@`` -> "at", ``&`` -> "and", ``%`` -> "percent",
  ``+`` -> "plus", ``=`` -> "equals"; dotted abbreviations ``A.M.`` -> "a m";
* everything else that is not a letter is a word break; apostrophes survive only inside words.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"
"""The characters :func:`normalize_text` may output (the flagship's CTC vocabulary)."""

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SYMBOLS = {
    "#": " pound ",
    "*": " star ",
    "@": " at ",
    "&": " and ",
    "%": " percent ",
    "+": " plus ",
    "=": " equals ",
}

#: Salt of the split hash; changing it reshuffles which prompts are unseen.
SPLIT_SALT = "gradsurgery-asr_se-unseen-text-v1"
#: Fraction of real prompt transcripts held out of all training text.
UNSEEN_FRACTION = 0.5


def number_to_words(n: int) -> str:
    """Spell a non-negative integer below 10**12 as English words ("one hundred five").

    Raises:
        ValueError: if ``n`` is negative or too large.
    """
    if n < 0 or n >= 10**12:
        raise ValueError(f"number_to_words expects 0 <= n < 10**12, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return (
                number_to_words(high)
                + " "
                + name
                + ("" if rest == 0 else " " + number_to_words(rest))
            )
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """Spell a positive integer as an ordinal ("twenty first")."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return " ".join([*words[:-1], last])


def digits_to_words(digits: str) -> str:
    """Read a digit string one digit at a time ("0800" -> "zero eight zero zero")."""
    return " ".join(_ONES[int(d)] for d in digits)


def _spell_number(digits: str) -> str:
    if len(digits) > 4 or (len(digits) > 1 and digits[0] == "0"):
        return digits_to_words(digits)
    return number_to_words(int(digits))


def _number(match: re.Match[str]) -> str:
    return " " + _spell_number(match.group(0)) + " "


def _time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        tail = "o'clock"
    elif minutes < 10:
        tail = "oh " + _ONES[minutes]
    else:
        tail = number_to_words(minutes)
    return f" {number_to_words(hours)} {tail} "


def _money(match: re.Match[str]) -> str:
    dollars = int(match.group(1).replace(",", ""))
    words = f"{number_to_words(dollars)} dollar{'' if dollars == 1 else 's'}"
    if match.group(2):
        cents = int(match.group(2))
        if cents:
            words += f" and {number_to_words(cents)} cent{'' if cents == 1 else 's'}"
    return f" {words} "


def _decimal(match: re.Match[str]) -> str:
    whole, frac = match.group(1), match.group(2)
    return f" {_spell_number(whole)} point {digits_to_words(frac)} "


_RE_DOTTED = re.compile(r"\b(?:[A-Za-z]\.){2,}")
_RE_MONEY = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d\d))?\b")
_RE_TIME = re.compile(r"\b(\d{1,2}):(\d\d)\b")
_RE_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_RE_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_RE_DIGITS = re.compile(r"\d+")
_RE_NON_ALPHABET = re.compile(r"[^a-z' ]+")
_RE_SPACES = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """Normalise a transcript to lower-case words over :data:`ALPHABET`.

    Args:
        s: raw text, e.g. ``"Press 1, then #."``.

    Returns:
        The normalised text, e.g. ``"press one then pound"``; single spaces between
        words, no leading or trailing space, only characters of :data:`ALPHABET`.
    """
    if not isinstance(s, str):
        raise TypeError(f"normalize_text expects a str, got {type(s).__name__}")
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("\u2019", "'").replace("`", "'")
    s = _RE_DOTTED.sub(lambda m: " " + " ".join(m.group(0).replace(".", "")) + " ", s)
    s = _RE_MONEY.sub(_money, s)
    s = _RE_TIME.sub(_time, s)
    s = _RE_ORDINAL.sub(lambda m: " " + ordinal_words(int(m.group(1))) + " ", s)
    s = _RE_THOUSANDS.sub("", s)
    s = _RE_DECIMAL.sub(_decimal, s)
    s = _RE_DIGITS.sub(_number, s)
    for symbol, word in _SYMBOLS.items():
        s = s.replace(symbol, word)
    s = _RE_NON_ALPHABET.sub(" ", s.lower())
    words = []
    for word in s.split():
        word = word.strip("'")
        word = re.sub(r"'{2,}", "'", word)
        if word:
            words.append(word)
    return " ".join(words)


def split_hash(normalized: str) -> float:
    """Deterministic number in [0, 1) from a normalised sentence (salted SHA-256)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}\n{normalized}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_unseen_text(normalized: str) -> bool:
    """The split rule: is this (normalised) prompt sentence held out of all training text?

    About :data:`UNSEEN_FRACTION` of distinct sentences are unseen. The rule depends
    on the text alone, so identical transcripts always fall on the same side.
    """
    return split_hash(normalized) < UNSEEN_FRACTION


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as a run of whole words (both normalised)."""
    return f" {phrase} " in f" {text} "
