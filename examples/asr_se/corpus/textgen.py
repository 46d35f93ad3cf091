"""Generated training text in the domain of the real test prompts.

Telephone and voice-menu phrases, digit strings, dates, times and amounts, built
from templates and a small vocabulary, plus sentences of the *seen* real prompts
(those the split rule does not hold out). Everything is passed through
:func:`~.text.normalize_text`, exactly like the test transcripts.

The generator guarantees that no text it returns

* equals the transcript (or one sentence of the transcript) of an *unseen* prompt, and
* contains an unseen prompt transcript of three or more words as a run of words.

Short unseen transcripts ("thank you", "seven") cannot be kept out of every
sentence, but they never make a whole training utterance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from .text import contains_phrase, normalize_text

DEPARTMENTS = (
    "sales", "support", "billing", "accounting", "shipping", "the front desk", "customer service",
    "technical support", "human resources", "reservations", "the pharmacy", "claims", "returns",
    "the help desk", "account services", "the service department", "parts", "admissions",
)  # fmt: skip
ACTIONS = (
    "leave a message", "speak with an operator", "hear your messages", "change your password",
    "record your name", "check your balance", "return to the main menu", "repeat this menu",
    "transfer this call", "reach customer service", "hear our hours", "make a payment",
    "cancel this request", "confirm your order", "hear the next message", "delete this message",
    "save this message", "replay this message", "change your greeting", "join the conference",
    "mute your line", "end this call", "update your address", "schedule an appointment",
    "track your package", "report a problem", "hear these options again", "reach the directory",
)  # fmt: skip
THINGS = (
    "password", "mailbox number", "account number", "extension", "pin", "access code",
    "conference number", "agent number", "telephone number", "member number", "zip code",
    "order number", "card number", "room number", "security code", "date of birth",
)  # fmt: skip
STATUSES = (
    "busy", "unavailable", "not answering", "in a meeting", "on the phone", "away from the desk",
    "out of the office", "on another call",
)  # fmt: skip
FOLDERS = ("new", "old", "work", "family", "friends", "urgent", "saved")
NAMES = (
    "Alice", "John", "Maria", "David", "Sarah", "Michael", "Linda", "Robert", "Emma", "James",
    "Olivia", "Daniel", "Laura", "Peter", "Susan", "Thomas", "Karen", "Paul", "Nancy", "Mark",
)  # fmt: skip
COMPANIES = (
    "Acme", "Northwind", "Blue Sky Travel", "Green Valley Bank", "City Hospital", "Metro Gas",
    "Sunrise Dental", "Lakeside Insurance", "Union Electric", "Pine Street Pharmacy",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
DAYPARTS = ("P.M.", "in the morning", "in the afternoon", "in the evening", "tonight")
KEYS = ("#", "*", "the pound key", "the star key", "pound", "star")

TEMPLATES = (
    "press {d} for {dept}",
    "for {dept}, press {d}",
    "for {dept} press {d} now",
    "to {action}, press {d}",
    "to {action}, press {key}",
    "press {d} to {action}",
    "press {d} to {action}, or {d} to {action}",
    "please enter your {thing}",
    "please enter your {thing} followed by {key}",
    "enter your {thing}, then press {key}",
    "please say or enter your {thing}",
    "that {thing} is not valid",
    "your {thing} has been changed",
    "your {thing} is {digits}",
    "you entered {digits}",
    "please dial {digits}",
    "the number is {digits}",
    "your confirmation code is {digits}",
    "you have {n} new messages",
    "you have {n} saved messages",
    "you have one new message",
    "message {n}",
    "extension {ext}",
    "the person at extension {ext} is {status}",
    "{name} is {status}",
    "calling {name}",
    "transferring you to {dept}",
    "please hold for {dept}",
    "the time is {time}",
    "the time is {time} {daypart}",
    "today is {weekday}",
    "today is {weekday}, {month} {ord}",
    "your appointment is on {weekday} at {time}",
    "your appointment is on {month} {ord} at {time}",
    "the office is closed on {weekday}",
    "we are open {weekday} through {weekday}",
    "our hours are {h} to {h} {weekday} through {weekday}",
    "the meeting starts at {time}",
    "the next available time is {weekday} at {time}",
    "your flight leaves at {time} {daypart}",
    "your call is number {n} in the queue",
    "you are caller number {n}",
    "the estimated wait time is {n} minutes",
    "you have {n} minutes remaining",
    "your balance is ${money}",
    "a payment of ${money} was received on {month} {ord}",
    "message received {weekday} at {time}",
    "the conference has {n} participants",
    "message saved in the {folder} folder",
    "moving to the {folder} folder",
    "to confirm, press {d}",
    "if this is correct press {d}, otherwise press {d}",
    "press {d} for yes or {d} for no",
    "dial {d} for an operator",
    "the {ord} message",
    "thank you for calling {company}",
    "welcome to {company}",
    "goodbye and thank you for calling {company}",
    "your order will arrive on {weekday}",
    "your order will arrive on {month} {ord}",
    "the total is ${money}",
    "room {ext} is {status}",
    "please call back after {time}",
    "the due date is {month} {ord}",
    "your code expires in {n} minutes",
    "the line is {status}",
    "all of our agents are {status}",
)
"""Phrase shapes, written in raw text (digits and symbols are normalised afterwards)."""

_RE_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(raw: str) -> list[str]:
    """Split raw prompt text at sentence punctuation (``.``, ``!``, ``?``, ``;``)."""
    return [s for s in _RE_SENTENCE_END.split(raw.strip()) if s]


class TextGenerator:
    """Draws normalised training sentences.

    Args:
        seen_sentences: normalised sentences of seen prompts to mix in.
        forbidden: normalised unseen-prompt transcripts (and their sentences) that must
            never appear in training text (see the module docstring for the exact rule).
        seen_fraction: probability of drawing a seen prompt sentence instead of a template.
        min_words: shortest text returned (in words).
        max_words: longest text returned (in words); keeps TTS utterances short.
    """

    def __init__(
        self,
        seen_sentences: Iterable[str],
        forbidden: Iterable[str],
        *,
        seen_fraction: float = 0.25,
        min_words: int = 2,
        max_words: int = 10,
    ) -> None:
        self.forbidden = frozenset(f for f in forbidden if f)
        self.forbidden_phrases = tuple(sorted(f for f in self.forbidden if len(f.split()) >= 3))
        self.min_words, self.max_words = min_words, max_words
        self.seen = tuple(sorted({s for s in seen_sentences if self._allowed(s)}))
        self.seen_fraction = seen_fraction if self.seen else 0.0

    def _allowed(self, text: str) -> bool:
        n = len(text.split())
        if not self.min_words <= n <= self.max_words or text in self.forbidden:
            return False
        return not any(contains_phrase(text, p) for p in self.forbidden_phrases)

    def _fill(self, template: str, rng: np.random.Generator) -> str:
        def pick(seq: Sequence[str]) -> str:
            return seq[int(rng.integers(len(seq)))]

        def slot(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "d":
                return str(int(rng.integers(10)))
            if name == "digits":
                return " ".join(str(int(d)) for d in rng.integers(10, size=int(rng.integers(3, 8))))
            if name == "n":
                return str(int(rng.integers(2, 60)))
            if name == "ext":
                return str(int(rng.integers(100, 10000)))
            if name == "h":
                return str(int(rng.integers(1, 13)))
            if name == "time":
                minutes = pick(("00", "05", "10", "15", "20", "30", "45", "50", "07", "42"))
                return f"{int(rng.integers(1, 13))}:{minutes}"
            if name == "ord":
                return _ordinal_suffix(int(rng.integers(1, 32)))
            if name == "money":
                cents = int(rng.integers(0, 100)) if rng.random() < 0.5 else 0
                return (
                    f"{int(rng.integers(1, 500))}.{cents:02d}"
                    if cents
                    else str(int(rng.integers(1, 2000)))
                )
            table = {
                "dept": DEPARTMENTS, "action": ACTIONS, "thing": THINGS, "status": STATUSES,
                "folder": FOLDERS, "name": NAMES, "company": COMPANIES, "weekday": WEEKDAYS,
                "month": MONTHS, "daypart": DAYPARTS, "key": KEYS,
            }  # fmt: skip
            if name not in table:
                raise KeyError(f"template slot {{{name}}} has no filler")
            return pick(table[name])

        return re.sub(r"\{(\w+)\}", slot, template)

    def generate(self, rng: np.random.Generator) -> str:
        """One normalised sentence satisfying the length and unseen-text rules."""
        for _ in range(1000):
            if rng.random() < self.seen_fraction:
                text = self.seen[int(rng.integers(len(self.seen)))]
            else:
                text = normalize_text(self._fill(TEMPLATES[int(rng.integers(len(TEMPLATES)))], rng))
            if self._allowed(text):
                return text
        raise RuntimeError("TextGenerator could not draw an allowed sentence in 1000 tries")


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"
