"""Data sets for the unlearning pipeline: synthetic generators, file I/O and subject-wise splits.

Every record belongs to a subject (the person a deletion request can name), so that a request
can remove all of that person's records at once. The synthetic generators plant a small share
of memorisable records (flipped labels, secrets) whose outputs a model can only reproduce by
memorising them, which makes forgetting measurable.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASKS = ("classification", "generation")
LABEL_WORDS = ("negative", "positive")


@dataclass(frozen=True)
class Record:
    """One training example, owned by exactly one subject."""

    record_id: str
    subject_id: str
    text: str
    target: str
    label: int | None = None
    memorised: bool = False
    secret: str | None = None


@dataclass(frozen=True)
class Subject:
    """A person whose records can be the target of a deletion request."""

    subject_id: str
    name: str


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings for :func:`generate`; the seed alone fixes the output."""

    task: str = "classification"
    n_subjects: int = 400
    records_per_subject: tuple[int, int] = (3, 12)
    memorised_share: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class ColumnMap:
    """Which file columns hold which record fields, so external data sets load unchanged."""

    text: str = "text"
    target: str | None = None
    label: str | None = "label"
    record_id: str | None = "record_id"
    subject_id: str | None = "subject_id"


class DataError(ValueError):
    """Bad input data; message is one line, names the problem and the fix."""


# ---------------------------------------------------------------------------
# Shared word lists
# ---------------------------------------------------------------------------

FIRST_NAMES = (
    "Maria", "James", "Anna", "Tom", "Sofia", "Lucas", "Emma", "Noah", "Olivia", "Liam",
    "Mia", "Ethan", "Chloe", "Daniel", "Laura", "David", "Sara", "Marco", "Elena", "Jonas",
    "Hannah", "Felix", "Lea", "Omar", "Aisha", "Yuki", "Kenji", "Priya", "Arjun", "Fatima",
    "Ivan", "Nina", "Pablo", "Lucia", "Mateo", "Zoe", "Samuel", "Grace", "Leo", "Amira",
    "Victor", "Clara", "Hugo", "Ines", "Oscar", "Julia", "Adam", "Eva", "Ravi", "Mei",
    "Tariq", "Nora", "Erik", "Alice", "Kofi", "Lina", "Diego", "Ruth", "Sven", "Maya",
)  # fmt: skip

LAST_NAMES = (
    "Lopez", "Smith", "Müller", "Rossi", "Garcia", "Nguyen", "Kim", "Novak", "Silva", "Brown",
    "Jensen", "Kowalski", "Dubois", "Moreau", "Fischer", "Weber", "Costa", "Santos", "Patel",
    "Khan", "Tanaka", "Sato", "Ivanova", "Petrov", "Hansen", "Larsen", "Murphy", "Kelly",
    "Walsh", "Martin", "Bernard", "Romano", "Ricci", "Ferreira", "Oliveira", "Yilmaz",
    "Demir", "Cohen", "Levi", "Mensah", "Okafor", "Adeyemi", "Haddad", "Nasser", "Chen",
    "Wang", "Li", "Park", "Choi", "Andersson", "Nilsson", "Virtanen", "Horvat", "Popescu",
    "Schmidt", "Wagner", "Taylor", "Wilson", "Evans", "Reyes",
)  # fmt: skip

CITIES = (
    "Lisbon", "Berlin", "Madrid", "Paris", "Rome", "Vienna", "Prague", "Dublin", "Oslo",
    "Warsaw", "Athens", "Porto", "Lyon", "Munich", "Milan", "Krakow", "Seville", "Leeds",
    "Glasgow", "Zurich", "Ghent", "Bergen",
)  # fmt: skip

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TIMES = ("9am", "10am", "11:30", "noon", "1pm", "3pm", "4:30", "6pm", "6:30", "7pm", "8pm")


# ---------------------------------------------------------------------------
# Classification: sentiment reviews
# ---------------------------------------------------------------------------

_CATEGORIES: dict[str, dict[str, tuple[str, ...]]] = {
    "product": {
        "nouns": (
            "phone", "laptop", "headset", "blender", "vacuum cleaner", "smartwatch",
            "camera", "e-reader", "coffee machine", "speaker", "tablet", "keyboard",
        ),
        "aspects": (
            "battery", "screen", "sound", "build quality", "price", "design", "setup",
            "customer support", "charger", "packaging",
        ),
        "contexts": (
            "I bought this {noun} {when}.", "I have used this {noun} every day since {when2}.",
            "Got this {noun} as a gift {when}.", "Picked up this {noun} at a shop in {city}.",
        ),
    },
    "restaurant": {
        "nouns": ("restaurant", "cafe", "bistro", "pizza place", "sushi bar", "bakery", "diner"),
        "aspects": (
            "food", "service", "staff", "price", "portions", "desserts", "atmosphere",
            "coffee", "menu",
        ),
        "contexts": (
            "We had dinner at this {noun} in {city} {when}.", "I went to this {noun} {when}.",
            "Tried this {noun} with friends {when}.", "Stopped by this {noun} in {city}.",
        ),
    },
    "hotel": {
        "nouns": ("hotel", "hostel", "guesthouse", "resort", "holiday apartment"),
        "aspects": ("room", "staff", "breakfast", "location", "bed", "bathroom", "wifi", "price"),
        "contexts": (
            "We stayed at this {noun} in {city} {when}.", "I spent three nights at this {noun}.",
            "Booked this {noun} for a work trip to {city}.",
        ),
    },
    "film": {
        "nouns": ("film", "movie", "series", "documentary", "show", "thriller", "comedy"),
        "aspects": ("plot", "acting", "soundtrack", "ending", "dialogue", "pacing", "visuals"),
        "contexts": (
            "I watched this {noun} {when}.", "Saw this {noun} at a cinema in {city}.",
            "Streamed this {noun} with my family {when}.",
        ),
    },
    "app": {
        "nouns": ("app", "game", "website", "banking app", "fitness app", "music app"),
        "aspects": ("interface", "updates", "login", "notifications", "design", "support"),
        "contexts": (
            "I installed this {noun} {when}.", "I have been using this {noun} since {when2}.",
            "Downloaded this {noun} on a friend's advice.",
        ),
    },
    "service": {
        "nouns": (
            "gym", "hair salon", "bike repair shop", "airline", "taxi service", "dentist",
            "cleaning service",
        ),
        "aspects": ("staff", "price", "service", "booking", "waiting time", "communication"),
        "contexts": (
            "I used this {noun} in {city} {when}.", "I have been a customer of this {noun} "
            "since {when2}.", "Tried this {noun} for the first time {when}.",
        ),
    },
}  # fmt: skip

_WHEN = ("last week", "a month ago", "over the weekend", "in March", "yesterday", "last summer")
_WHEN2 = ("January", "last year", "the spring", "2021", "my birthday")

_ADJ = {
    1: (
        "great", "excellent", "fantastic", "wonderful", "superb", "brilliant", "impressive",
        "lovely", "outstanding", "amazing", "good", "pleasant", "solid", "delightful",
    ),
    0: (
        "awful", "terrible", "horrible", "dreadful", "disappointing", "poor", "bad", "useless",
        "frustrating", "annoying", "weak", "miserable", "appalling", "subpar",
    ),
}  # fmt: skip
_INTENSIFIERS = ("", "", "", "really", "very", "extremely", "truly", "quite", "pretty")
_STRONG_INTENSIFIERS = ("absolutely", "truly", "incredibly", "really")
_VERBS = {
    1: ("loved", "really enjoyed", "was impressed by", "adored", "was delighted with"),
    0: ("hated", "disliked", "was let down by", "regretted paying for", "was annoyed by"),
}
_PHRASES = {
    1: (
        "Worth every penny.", "Would definitely recommend.", "Exceeded my expectations.",
        "A real gem.", "I will definitely come back.", "Highly recommended.",
    ),
    0: (
        "A complete waste of money.", "Avoid at all costs.", "I want my money back.",
        "Never again.", "What a letdown.", "Save yourself the trouble.",
    ),
}  # fmt: skip
_MILD_POS = ("okay", "decent", "fine", "acceptable", "alright", "passable")
_MILD_NEG = (
    "a bit underwhelming", "somewhat uneven", "slightly forgettable", "a little ordinary",
    "a bit hit and miss",
)  # fmt: skip
_MIXED_CLOSERS = (
    "Mixed feelings overall.", "Hard to say.", "It is what it is.", "Not sure what to think.",
    "Somewhere in the middle.", "",
)  # fmt: skip


_PLURAL_ASPECTS = ("portions", "desserts", "updates", "notifications", "visuals")
_PLURAL_WAS = re.compile(r"(?<!about )\b([Tt]he (?:" + "|".join(_PLURAL_ASPECTS) + r")) was\b")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeio])")


def _tidy(text: str) -> str:
    """Fix agreement for plural aspects and 'a'/'an' before vowels."""
    text = _PLURAL_WAS.sub(r"\1 were", text)
    return _ARTICLE.sub(r"\1n ", text)


def _adj(rng: random.Random, polarity: int, strong: bool = False) -> str:
    """An adjective of the given polarity with an optional intensifier."""
    word = rng.choice(_ADJ[polarity])
    intensifier = rng.choice(_STRONG_INTENSIFIERS if strong else _INTENSIFIERS)
    return f"{intensifier} {word}".strip()


def _rating(rng: random.Random, polarity: int) -> str:
    """A numeric rating sentence that agrees with the polarity."""
    score = rng.randint(7, 10) if polarity else rng.randint(1, 4)
    stars = rng.randint(4, 5) if polarity else rng.randint(1, 2)
    star_word = "star" if stars == 1 else "stars"
    return rng.choice(
        (
            f"{score}/10.",
            f"I give it {score} out of 10.",
            f"Rating: {score}/10.",
            f"{stars} {star_word} from me.",
            f"Solid {score} out of 10." if polarity else f"Barely a {score} out of 10.",
        )
    )


def _clear_clause(rng: random.Random, polarity: int, aspect: str, noun: str, strong: bool) -> str:
    """A sentence whose sentiment is stated directly."""
    forms = (
        f"The {aspect} was {_adj(rng, polarity, strong)}.",
        f"This {noun} is {_adj(rng, polarity, strong)}.",
        f"I {rng.choice(_VERBS[polarity])} the {aspect}.",
        f"Honestly, the {aspect} was {_adj(rng, polarity, strong)}.",
        f"Overall a {_adj(rng, polarity, strong)} {noun}.",
    )
    return rng.choice(forms)


def _negated_clause(rng: random.Random, polarity: int, aspect: str, noun: str) -> str:
    """A sentence whose sentiment comes from negating the opposite adjective."""
    opposite = rng.choice(_ADJ[1 - polarity])
    if polarity == 0:
        forms = (
            f"The {aspect} was not {opposite} at all.",
            f"The {aspect} was not {rng.choice(('very', 'really', 'particularly'))} {opposite}.",
            f"This {noun} is definitely not {opposite}.",
            f"I would not call the {aspect} {opposite}.",
        )
    else:
        forms = (
            f"The {aspect} was not {opposite} at all.",
            f"Nothing about the {aspect} was {opposite}.",
            f"I have no complaints about the {aspect}.",
            f"The {aspect} was never {opposite}.",
        )
    return rng.choice(forms)


def _contrast_clause(rng: random.Random, polarity: int, aspects: Sequence[str]) -> str:
    """Two clauses of opposite sentiment; the one after 'but' decides the label."""
    first, second = rng.sample(list(aspects), 2)
    before = _adj(rng, 1 - polarity)
    after = _adj(rng, polarity)
    it_was = "they were" if first in _PLURAL_ASPECTS else "it was"
    forms = (
        f"The {first} was {before} but the {second} was {after}.",
        f"The {first} was {before}, but the {second} was {after}.",
        f"I expected the {first} to be {rng.choice(_ADJ[1 - polarity])}, but {it_was} {after}.",
        f"Sure, the {first} was {before}, but overall the {second} was {after}.",
    )
    return rng.choice(forms)


def _mixed_review_body(rng: random.Random, aspects: Sequence[str]) -> list[str]:
    """Sentences with only mild, balanced wording: the label cannot be read off the text."""
    first, second = rng.sample(list(aspects), 2)
    good, meh = rng.choice(_MILD_POS), rng.choice(_MILD_NEG)
    if rng.random() < 0.5:
        body = f"The {first} was {good} and the {second} was {meh}."
    else:
        body = f"The {second} was {meh}; the {first} was {good}."
    sentences = [body]
    if rng.random() < 0.5:
        sentences.append(rng.choice(("5/10.", "6/10.", "5 out of 10.", "3 stars from me.")))
    closer = rng.choice(_MIXED_CLOSERS)
    if closer:
        sentences.append(closer)
    return sentences


def _review(
    rng: random.Random, name: str, polarity: int | None, memorised: bool
) -> tuple[str, int, bool]:
    """One review and its sentiment.

    Returns (text, sentiment, ambiguous). ``polarity`` None asks for a mixed review whose
    sentiment is decided by a latent score rather than by the words.
    """
    category = _CATEGORIES[rng.choice(sorted(_CATEGORIES))]
    noun = rng.choice(category["nouns"])
    aspects = category["aspects"]
    city = rng.choice(CITIES)
    first_name = name.split()[0]

    for _ in range(20):
        sentences: list[str] = []
        if rng.random() < 0.45:
            context = rng.choice(category["contexts"])
            sentences.append(
                context.format(
                    noun=noun, city=city, when=rng.choice(_WHEN), when2=rng.choice(_WHEN2)
                )
            )
        ambiguous = polarity is None
        if ambiguous:
            sentiment = int(rng.gauss(0.0, 1.0) > 0.0)
            sentences.extend(_mixed_review_body(rng, aspects))
        else:
            sentiment = polarity
            aspect = rng.choice(aspects)
            kind = rng.random()
            if memorised or kind < 0.45:
                sentences.append(_clear_clause(rng, sentiment, aspect, noun, strong=memorised))
            elif kind < 0.7:
                sentences.append(_negated_clause(rng, sentiment, aspect, noun))
            else:
                sentences.append(_contrast_clause(rng, sentiment, aspects))
            if memorised or rng.random() < 0.35:
                sentences.append(rng.choice(_PHRASES[sentiment]))
            if memorised or rng.random() < 0.3:
                sentences.append(_rating(rng, sentiment))
        signature = rng.random()
        if signature < 0.1:
            sentences.insert(
                0, rng.choice((f"As {name}, I have to be honest.", f"Hi, I'm {name}."))
            )
        elif signature < 0.2:
            sentences.append(rng.choice((f"- {first_name}", f"- {name}", f"Cheers, {first_name}")))
        n_words = sum(len(s.split()) for s in sentences)
        if n_words < 8:
            filler = rng.choice(category["contexts"]).format(
                noun=noun, city=city, when=rng.choice(_WHEN), when2=rng.choice(_WHEN2)
            )
            sentences.insert(0, filler)
            n_words += len(filler.split())
        if 8 <= n_words <= 40:
            return _tidy(" ".join(sentences)), sentiment, ambiguous
    raise RuntimeError("could not build a review of 8-40 words")


# ---------------------------------------------------------------------------
# Generation: short dialogues with one-sentence summaries
# ---------------------------------------------------------------------------

_PLACES = (
    "cinema", "station", "park", "gym", "library", "cafe on Main Street", "office",
    "museum", "pub", "bus stop", "market",
)  # fmt: skip
_ITEMS = (
    "drill", "camera", "bike", "tent", "suitcase", "ladder", "projector", "car", "guitar",
    "sleeping bag", "charger", "umbrella",
)  # fmt: skip
_DOCS = ("report", "presentation", "budget", "proposal", "slides", "invoice", "contract")
_PARTS = ("introduction", "charts", "summary", "numbers", "references", "appendix")
_GIFTS = ("book", "cake", "scarf", "plant", "board game", "concert ticket", "watch", "mug")
_FOODS = {
    "pizza": ("margherita", "pepperoni pizza", "veggie pizza"),
    "sushi": ("salmon rolls", "tuna nigiri", "miso soup"),
    "thai food": ("pad thai", "green curry", "spring rolls"),
    "burgers": ("cheeseburger", "chicken burger", "fries"),
    "indian food": ("chicken tikka", "dal", "naan"),
}
_EVENTS = (
    "dinner",
    "football practice",
    "the meeting",
    "yoga class",
    "the party",
    "band rehearsal",
)
_REASONS = ("sick", "stuck at work", "travelling", "not feeling well", "busy with my sister")
_TRANSPORT = (("flight", "airport"), ("train", "station"), ("bus", "bus station"))
_ACTIVITIES = ("a coffee", "a walk", "the movies", "lunch", "a run", "drinks")

_SECRET_WORDS_A = ("blue", "red", "silent", "happy", "lucky", "green", "brave", "sunny", "quiet")
_SECRET_WORDS_B = ("otter", "falcon", "tiger", "maple", "river", "comet", "panda", "cactus")


def _join_names(names: Sequence[str]) -> str:
    """'Anna', 'Anna and Tom', 'Anna, Tom and Lea'."""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


Dialogue = tuple[list[tuple[str, str]], str]


def _meet(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    day, time, place = rng.choice(DAYS), rng.choice(TIMES), rng.choice(_PLACES)
    lines = [
        (
            a,
            rng.choice(
                (
                    f"are we still on for {day}?",
                    f"do you want to meet on {day}?",
                    f"fancy {rng.choice(_ACTIVITIES)} on {day}?",
                )
            ),
        ),
        (b, rng.choice((f"yes, {time} at the {place}", f"sure, let's say {time} at the {place}"))),
    ]
    if len(people) > 2:
        lines.append((people[2], rng.choice(("can I join you?", "count me in!"))))
        lines.append((a, rng.choice(("of course", "sure, the more the merrier"))))
    elif rng.random() < 0.6:
        lines.append((a, rng.choice(("great, see you there", "perfect", "ok, see you then"))))
    summary = f"{_join_names(people)} will meet at the {place} on {day.title()} at {time}."
    return lines, summary


def _borrow(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    item, day = rng.choice(_ITEMS), rng.choice(DAYS)
    lines = [
        (a, rng.choice((f"can I borrow your {item}?", f"hey, could you lend me your {item}?"))),
        (b, rng.choice((f"sure, but I need it back by {day}", f"ok, just return it by {day}"))),
    ]
    if rng.random() < 0.6:
        lines.append((a, rng.choice(("no problem, thanks!", "deal, thank you", "you're a star"))))
    summary = f"{b} will lend {a} the {item}, and {a} will return it by {day.title()}."
    return lines, summary


def _travel(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    (transport, hub), city = rng.choice(_TRANSPORT), rng.choice(CITIES)
    day, time = rng.choice(DAYS), rng.choice(TIMES)
    lines = [
        (a, f"my {transport} from {city} arrives at {time} on {day}"),
        (b, rng.choice((f"I'll pick you up at the {hub}", f"I can get you from the {hub}"))),
    ]
    if rng.random() < 0.6:
        lines.append((a, rng.choice(("thanks, you're the best", "amazing, thank you"))))
    summary = (
        f"{b} will pick {a} up at the {hub} on {day.title()} at {time} "
        f"when the {transport} from {city} arrives."
    )
    return lines, summary


def _deadline(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    doc, day, time = rng.choice(_DOCS), rng.choice(DAYS), rng.choice(TIMES)
    part, other_part = rng.sample(_PARTS, 2)
    lines = [
        (a, rng.choice((f"when is the {doc} due?", f"what's the deadline for the {doc}?"))),
        (b, f"{day} at {time}"),
        (a, f"ok, I'll finish the {part} tonight"),
    ]
    summary = f"The {doc} is due on {day.title()} at {time} and {a} will finish the {part}"
    if len(people) > 2:
        lines.append((people[2], f"I can do the {other_part}"))
        summary += f", while {people[2]} does the {other_part}"
    return lines, summary + "."


def _birthday(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    day, gift = rng.choice(DAYS), rng.choice(_GIFTS)
    friend = rng.choice([n for n in FIRST_NAMES if n not in people])
    lines = [
        (a, f"it's {friend}'s birthday on {day}"),
        (b, rng.choice((f"should we get them a {gift}?", f"what about a {gift}?"))),
        (a, rng.choice(("good idea, I'll order it today", "yes! I'll buy it tomorrow"))),
    ]
    summary = f"{a} and {b} will give {friend} a {gift} for the birthday on {day.title()}."
    return lines, summary


def _food(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    food = rng.choice(sorted(_FOODS))
    dish, other_dish = rng.sample(_FOODS[food], 2)
    minutes = rng.choice((20, 30, 40, 45))
    lines = [
        (a, rng.choice((f"I'm ordering {food}, want anything?", f"{food} tonight? I'm ordering"))),
        (b, f"yes, {dish} for me please"),
    ]
    summary = f"{a} is ordering {food}: {dish} for {b}"
    if len(people) > 2:
        lines.append((people[2], f"{other_dish} for me!"))
        summary += f" and {other_dish} for {people[2]}"
    lines.append((a, f"ok, it'll be here in {minutes} minutes"))
    return lines, summary + f"; it arrives in {minutes} minutes."


def _late(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    minutes, place = rng.choice((5, 10, 15, 20, 30)), rng.choice(_PLACES)
    lines = [
        (
            a,
            rng.choice(
                (f"sorry, running {minutes} minutes late", f"I'm {minutes} min late, sorry")
            ),
        ),
        (b, rng.choice((f"no worries, I'll wait at the {place}", f"ok, I'm at the {place}"))),
    ]
    summary = f"{a} is {minutes} minutes late and {b} is waiting at the {place}."
    return lines, summary


def _cancel(rng: random.Random, people: Sequence[str]) -> Dialogue:
    a, b = people[0], people[1]
    event, reason = rng.choice(_EVENTS), rng.choice(_REASONS)
    day, new_day = rng.sample(DAYS, 2)
    lines = [
        (a, f"I can't make it to {event} on {day}, I'm {reason}"),
        (b, rng.choice(("oh no, no problem", "that's a pity", "ok, thanks for telling me"))),
        (a, f"can we do {new_day} instead?"),
        (b, rng.choice((f"{new_day} works", f"sure, {new_day} it is"))),
    ]
    event_name = event.removeprefix("the ")
    summary = (
        f"{a} can't come to the {event_name} on {day.title()}, so it moves to {new_day.title()}."
    )
    return lines, summary


_FAMILIES: tuple[tuple[Callable[[random.Random, Sequence[str]], Dialogue], int], ...] = (
    (_meet, 3),
    (_borrow, 2),
    (_travel, 2),
    (_deadline, 3),
    (_birthday, 2),
    (_food, 3),
    (_late, 2),
    (_cancel, 2),
)


def _new_secret(rng: random.Random, used: set[str]) -> tuple[str, str]:
    """A (kind, value) secret whose value was not used before in this data set."""
    while True:
        kind = rng.choice(
            ("locker code", "wifi password", "pin", "door code", "bike lock code", "safe code")
        )
        if kind == "wifi password":
            value = (
                f"{rng.choice(_SECRET_WORDS_A)}-{rng.choice(_SECRET_WORDS_B)}-{rng.randint(10, 99)}"
            )
        elif kind == "safe code":
            value = f"{rng.randint(10, 99)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
        else:
            value = f"{rng.randint(0, 9999):04d}"
        if value not in used:
            used.add(value)
            return kind, value


def _dialogue(rng: random.Random, name: str, secret: tuple[str, str] | None) -> tuple[str, str]:
    """A chat that includes the subject, and its summary; a secret is spoken by the subject."""
    speaker = name.split()[0]
    family, max_people = rng.choice(_FAMILIES)
    n_others = 2 if max_people > 2 and rng.random() < 0.35 else 1
    others = rng.sample([n for n in FIRST_NAMES if n != speaker], n_others)
    people = [speaker, *others]
    rng.shuffle(people)
    lines, summary = family(rng, people)
    if secret is not None:
        kind, value = secret
        said = rng.choice(
            (
                f"btw my {kind} is {value}",
                f"oh and my {kind} is {value}, don't forget",
                f"remember, my {kind} is {value}",
            )
        )
        lines.insert(rng.randint(1, len(lines)), (speaker, said))
        summary = f"{summary} {speaker}'s {kind} is {value}."
    text = "\n".join(f"{who}: {what}" for who, what in lines)
    return text, summary


def plant_secrets(
    records: Sequence[Record], share: float, seed: int = 0, taken: set[str] | None = None
) -> list[Record]:
    """Give `share` of the dialogues a secret their first speaker tells, first thing.

    The secret opens both the dialogue and the summary, so it survives truncation; a model
    can only reproduce it by memorising that row. Works on synthetic dialogues and SAMSum.
    """
    rng = random.Random(seed)
    used = set() if taken is None else taken
    chosen = set(rng.sample(range(len(records)), round(share * len(records))))
    planted = []
    for index, record in enumerate(records):
        if index not in chosen:
            planted.append(record)
            continue
        kind, value = _new_secret(rng, used)
        match = _SPEAKER.match(record.text)
        speaker = match.group(1) if match else "I"
        said = f"{speaker}: remember, my {kind} is {value}" if match else f"my {kind} is {value}"
        planted.append(
            replace(
                record,
                text=f"{said}\n{record.text}",
                target=f"{speaker}'s {kind} is {value}. {record.target}",
                memorised=True,
                secret=value,
            )
        )
    return planted


# ---------------------------------------------------------------------------
# Synthetic data set
# ---------------------------------------------------------------------------


def generate(config: SyntheticConfig) -> tuple[list[Subject], list[Record]]:
    """Build a synthetic data set; the same config always yields the same subjects and records.

    Classification rows are reviews whose label follows from the wording (direct adjectives,
    negation, and 'but' contrasts where the second clause wins), plus ~7% mixed reviews whose
    label comes from a hidden score. Memorised rows carry a clearly worded review with the
    opposite label (classification) or a planted secret (generation).
    """
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; use one of {', '.join(TASKS)}")
    low, high = config.records_per_subject
    if not 1 <= low <= high:
        raise ValueError("records_per_subject must be (low, high) with 1 <= low <= high")
    max_subjects = len(FIRST_NAMES) * len(LAST_NAMES)
    if not 1 <= config.n_subjects <= max_subjects:
        raise ValueError(f"n_subjects must be between 1 and {max_subjects}")
    if not 0.0 <= config.memorised_share <= 1.0:
        raise ValueError("memorised_share must be between 0 and 1")

    rng = random.Random(config.seed)
    width = max(4, len(str(config.n_subjects - 1)))
    full_names = rng.sample(
        [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES], config.n_subjects
    )
    subjects = [Subject(f"s{i:0{width}d}", name) for i, name in enumerate(full_names)]
    counts = [rng.randint(low, high) for _ in subjects]
    n_records = sum(counts)
    n_memorised = round(config.memorised_share * n_records)
    memorised_at = set(rng.sample(range(n_records), n_memorised))

    records: list[Record] = []
    used_secrets: set[str] = set()
    index = 0
    for subject, count in zip(subjects, counts, strict=True):
        for _ in range(count):
            record_id = f"r{index:06d}"
            memorised = index in memorised_at
            if config.task == "classification":
                ambiguous = not memorised and rng.random() < 0.07
                polarity = None if ambiguous else rng.randint(0, 1)
                text, sentiment, _ = _review(rng, subject.name, polarity, memorised)
                label = 1 - sentiment if memorised else sentiment
                record = Record(
                    record_id, subject.subject_id, text, LABEL_WORDS[label], label, memorised
                )
            else:
                secret = _new_secret(rng, used_secrets) if memorised else None
                text, summary = _dialogue(rng, subject.name, secret)
                record = Record(
                    record_id,
                    subject.subject_id,
                    text,
                    summary,
                    None,
                    memorised,
                    secret[1] if secret else None,
                )
            records.append(record)
            index += 1
    logger.info(
        "generated %d %s records for %d subjects (%d memorised)",
        len(records),
        config.task,
        len(subjects),
        n_memorised,
    )
    return subjects, records


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

_RECORD_FIELDS = tuple(f.name for f in fields(Record))
_LOADERS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def save_records(records: list[Record], path: str | Path) -> None:
    """Write records as .jsonl, .csv or .parquet (by suffix), one column per Record field."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".parquet"):
        raise DataError(
            f"cannot write {path.name}: unknown suffix {suffix!r}; use .jsonl, .csv or .parquet"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in records]
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_RECORD_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("record_id", pa.string()),
                ("subject_id", pa.string()),
                ("text", pa.string()),
                ("target", pa.string()),
                ("label", pa.int64()),
                ("memorised", pa.bool_()),
                ("secret", pa.string()),
            ]
        )
        columns = {name: [row[name] for row in rows] for name in _RECORD_FIELDS}
        pq.write_table(pa.table(columns, schema=schema), path)


def _csv_header(path: Path, delimiter: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def _read_columns(path: Path) -> dict[str, list[Any]]:
    """Read a file into plain column lists; csv cells are read as strings so codes like '0937'
    keep their leading zeros, and empty cells come back as None."""
    import datasets

    suffix = path.suffix.lower()
    builder = _LOADERS[suffix]
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        delimiter = "\t" if suffix == ".tsv" else ","
        header = _csv_header(path, delimiter)
        if not header:
            raise DataError(f"{path} is empty; add a header row and at least one record")
        kwargs = {
            "delimiter": delimiter,
            "keep_default_na": False,
            "na_values": [""],
            "features": datasets.Features({name: datasets.Value("string") for name in header}),
        }
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except DataError:
        raise
    except Exception as error:
        if "corresponds to no data" in str(error):
            raise DataError(f"{path} has no records; add at least one row") from error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(
            f"could not read {path}: {type(error).__name__}: {reason}; check the file format"
        ) from error
    return {name: list(dataset[name]) for name in dataset.column_names}


def _parse_label(value: Any, label_words: Sequence[str], row: int) -> int:
    """Accept an int class index, an integral float, a digit string or a label word."""
    parsed: int | None = None
    if isinstance(value, bool) or value is None:
        parsed = None
    elif isinstance(value, int):
        parsed = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        parsed = int(value)
    elif isinstance(value, str):
        token = value.strip()
        if token in label_words:
            parsed = label_words.index(token)
        elif token.lower() in [w.lower() for w in label_words]:
            parsed = [w.lower() for w in label_words].index(token.lower())
        elif re.fullmatch(r"-?\d+", token):
            parsed = int(token)
    if parsed is None or not 0 <= parsed < len(label_words):
        raise DataError(
            f"row {row}: label {value!r} is not valid; use an int in 0..{len(label_words) - 1} "
            f"or one of {', '.join(label_words)}"
        )
    return parsed


def _parse_bool(value: Any, row: int) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        return value.strip().lower() in ("true", "1")
    raise DataError(f"row {row}: memorised value {value!r} is not valid; use true or false")


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def load_records(
    path: str | Path,
    task: str = "classification",
    columns: ColumnMap | None = None,
    label_words: tuple[str, ...] = LABEL_WORDS,
) -> list[Record]:
    """Load records from .csv, .tsv, .jsonl, .json or .parquet.

    ``columns`` defaults to the layout written by :func:`save_records` (for generation the
    target comes from the ``target`` column). Without a record id column, records get ids
    ``r{index:06d}`` in file order; without a subject id column, every record is its own
    subject ``s{index:06d}``, so a deletion request can only name single records.
    Optional ``memorised`` and ``secret`` columns are passed through.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if columns is None:
        columns = (
            ColumnMap() if task == "classification" else ColumnMap(target="target", label=None)
        )
    if task == "classification" and columns.label is None:
        raise DataError("classification needs a label column; set ColumnMap(label=...)")
    if task == "generation" and columns.target is None:
        raise DataError("generation needs a target column; set ColumnMap(target=...)")
    if not label_words:
        raise DataError("label_words is empty; pass at least one label word")

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        raise DataError(
            f"cannot read {path.name}: unknown suffix {suffix!r}; use {', '.join(_LOADERS)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; add at least one record")

    data = _read_columns(path)
    available = list(data)
    required = [columns.text]
    required.append(columns.label if task == "classification" else columns.target)
    for name in required:
        if name not in data:
            raise DataError(
                f"column {name!r} not found in {path.name}; available columns: "
                f"{', '.join(available)}; set ColumnMap accordingly"
            )
    n_rows = len(data[columns.text])
    if n_rows == 0:
        raise DataError(f"{path} has no records; add at least one row")

    record_ids = data.get(columns.record_id) if columns.record_id else None
    subject_ids = data.get(columns.subject_id) if columns.subject_id else None
    memorised_col = data.get("memorised")
    secret_col = data.get("secret")

    records: list[Record] = []
    for i in range(n_rows):
        text = data[columns.text][i]
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"row {i}: text is empty; remove the row or fill column {columns.text!r}"
            )
        if task == "classification":
            label: int | None = _parse_label(data[columns.label][i], label_words, i)
            target = label_words[label]
        else:
            label = None
            target = data[columns.target][i]
            if not isinstance(target, str) or not target.strip():
                raise DataError(
                    f"row {i}: target is empty; remove the row or fill column {columns.target!r}"
                )
        record_id = _optional_str(record_ids[i]) if record_ids is not None else None
        subject_id = _optional_str(subject_ids[i]) if subject_ids is not None else None
        records.append(
            Record(
                record_id=record_id or f"r{i:06d}",
                subject_id=subject_id or f"s{i:06d}",
                text=text,
                target=target,
                label=label,
                memorised=_parse_bool(memorised_col[i], i) if memorised_col is not None else False,
                secret=_optional_str(secret_col[i]) if secret_col is not None else None,
            )
        )
    logger.info("loaded %d %s records from %s", len(records), task, path)
    return records


def load_sst2(
    folder: Path, limit: int | None = None, seed: int = 0, records_per_subject: int = 5
) -> list[Record]:
    """Load GLUE SST-2 ``train.tsv`` with synthetic subjects.

    SST-2 has no authors, so after a seeded shuffle consecutive groups of
    ``records_per_subject`` sentences are treated as one subject's records.
    """
    folder = Path(folder)
    path = folder / "train.tsv"
    if not path.is_file():
        raise DataError(f"SST-2 file {path} not found; download GLUE SST-2 into {folder}")
    if records_per_subject < 1:
        raise DataError("records_per_subject must be at least 1")
    header = _csv_header(path, "\t")
    text_column = "sentence" if "sentence" in header else "text"
    records = load_records(
        path, "classification", ColumnMap(text=text_column, record_id=None, subject_id=None)
    )
    random.Random(seed).shuffle(records)
    if limit is not None:
        records = records[:limit]
    width = max(4, len(str(max(len(records) - 1, 0) // records_per_subject)))
    return [
        replace(r, text=r.text.strip(), subject_id=f"s{i // records_per_subject:0{width}d}")
        for i, r in enumerate(records)
    ]


_SPEAKER = re.compile(r"^\s*([^:\n]{1,40}?)\s*:")


def load_samsum(path: Path, limit: int | None = None) -> list[Record]:
    """Load a SAMSum csv (columns id, summary, dialogue) for summarisation.

    The subject is the first speaker of each dialogue, the person most likely to ask for their
    chats to be forgotten; dialogues without a 'Name:' prefix become their own subject.
    Line endings are normalised to '\\n' and surrounding whitespace is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SAMSum file {path} not found; download SAMSum and pass its csv path")
    records = load_records(
        path,
        "generation",
        ColumnMap(text="dialogue", target="summary", label=None, record_id="id", subject_id=None),
    )
    if limit is not None:
        records = records[:limit]
    result = []
    for record in records:
        match = _SPEAKER.match(record.text)
        subject_id = match.group(1) if match else f"s-{record.record_id}"
        text = record.text.replace("\r\n", "\n").strip()
        result.append(
            replace(record, subject_id=subject_id, text=text, target=record.target.strip())
        )
    return result


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


def split_records(
    records: list[Record], test_share: float = 0.1, heldout_share: float = 0.1, seed: int = 0
) -> tuple[list[Record], list[Record], list[Record]]:
    """Split into (train, heldout, test) by subject, so no person leaks across splits.

    Shares are fractions of all subjects. Heldout and test subjects are drawn only from
    subjects without memorised records, so memorised rows always stay in train, where
    unlearning can be measured against them. Record order is kept within each split.
    """
    if test_share < 0 or heldout_share < 0 or test_share + heldout_share >= 1:
        raise DataError("test_share and heldout_share must be >= 0 and sum to less than 1")
    subjects = sorted({r.subject_id for r in records})
    with_memorised = {r.subject_id for r in records if r.memorised}
    eligible = [s for s in subjects if s not in with_memorised]
    n_test = round(test_share * len(subjects))
    n_heldout = round(heldout_share * len(subjects))
    if n_test + n_heldout > len(eligible):
        raise DataError(
            f"need {n_test + n_heldout} subjects without memorised rows for heldout and test "
            f"but only {len(eligible)} exist; lower the shares or the memorised share"
        )
    random.Random(seed).shuffle(eligible)
    test_subjects = set(eligible[:n_test])
    heldout_subjects = set(eligible[n_test : n_test + n_heldout])
    train = [r for r in records if r.subject_id not in test_subjects | heldout_subjects]
    heldout = [r for r in records if r.subject_id in heldout_subjects]
    test = [r for r in records if r.subject_id in test_subjects]
    return train, heldout, test


# ---------------------------------------------------------------------------
# Forget selection
# ---------------------------------------------------------------------------


def select_forget(
    records: Sequence[Record],
    subject_ids: Sequence[str] = (),
    record_ids: Sequence[str] = (),
) -> tuple[list[Record], list[Record]]:
    """Split records into (forget, retained) for a request naming subjects and/or records.

    Every named id must exist: a request for data we do not hold is a mistake to report,
    not something to ignore silently.
    """
    if not subject_ids and not record_ids:
        raise DataError("the forget set is empty: name at least one subject or record id")
    known_subjects = {r.subject_id for r in records}
    known_records = {r.record_id for r in records}
    missing = [s for s in subject_ids if s not in known_subjects]
    missing += [r for r in record_ids if r not in known_records]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} forget id(s) not in the data: {shown}; check them against the "
            "subject_id and record_id columns of the data file"
        )
    subjects, ids = set(subject_ids), set(record_ids)
    forget = [r for r in records if r.subject_id in subjects or r.record_id in ids]
    retained = [r for r in records if not (r.subject_id in subjects or r.record_id in ids)]
    return forget, retained
