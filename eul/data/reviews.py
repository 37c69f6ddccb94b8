"""Classification rows of the synthetic data set: sentiment reviews (`review`).

A review's label follows from its wording (direct adjectives, negation, and 'but' contrasts
where the second clause wins); mixed reviews take theirs from a hidden score.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from eul.data.words import CITIES

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


def review(
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
