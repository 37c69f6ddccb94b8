"""Generation rows of the synthetic data set: short dialogues with one-sentence summaries.

A dialogue includes its subject; a memorised one carries a secret (`new_secret`) that the
subject says and the summary repeats.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from eul.data.words import CITIES, DAYS, FIRST_NAMES, TIMES

# The speaker of a dialogue's first line ('Name: ...'); SAMSum dialogues are written the same way.
SPEAKER = re.compile(r"^\s*([^:\n]{1,40}?)\s*:")

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


def new_secret(rng: random.Random, used: set[str]) -> tuple[str, str]:
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


def dialogue(rng: random.Random, name: str, secret: tuple[str, str] | None) -> tuple[str, str]:
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
