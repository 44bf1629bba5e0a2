"""A development set for the retrieval evaluation, in the LoCoMo format, generated from a seed.

    python -m bench.devset OUT.json [--seed 17] [--samples 6]

The shipped mini set is saturated, and tuning on the held-out set would only measure the tuning. This one is
built to be hard in the ways real multi-session chat is: both people have jobs, pets, trips and families, so a
question about one of them is answered by a turn that says "my" and not their name; filler turns reuse the
answers' vocabulary (a colleague's puppy, a neighbour's trip, a cousin's wedding); facts change over months (a
new job, a hobby given up); the question is a paraphrase of its evidence; some answers are the other person's
reply to a question whose words are in the turn before; multi-hop questions need turns from two or three
sessions. Speakers write in different styles (British, American texting, and English with German, Spanish,
French or Hindi interjections).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["build", "main"]

NAMES = [
    ("Maya", "Tom"), ("Priya", "Jonas"), ("Lucía", "Sam"), ("Amara", "Felix"), ("Hannah", "Ravi"), ("Chloé", "Marcus"),
    ("Ines", "Daniel"), ("Noor", "Oliver"),
]  # fmt: skip
STYLES = ["british", "texter", "german", "spanish", "french", "hindi", "plain"]
COMPANIES = ["Northwind Logistics", "Brightwell Pharma", "Kestrel Games", "Halden Bank", "Orchard Health",
    "Tidewater Energy", "Lumen Studio", "Ferro Engineering", "Bluebird Insurance", "Quarry & Co", "Maple Analytics",
    "Corvid Security", "Saltmarsh Foods", "Vantage Media", "Ironleaf Robotics", "Greyfield Council"]  # fmt: skip
ROLES = ["data analyst", "project manager", "nurse", "UX designer", "backend developer", "accountant",
    "product owner", "lab technician", "copywriter", "site engineer", "teacher", "recruiter", "QA lead",
    "marketing lead", "paralegal", "architect"]  # fmt: skip
PETS = [("dog", "greyhound"), ("dog", "beagle"), ("dog", "border collie"), ("dog", "dachshund"), ("cat", "tabby"),
    ("cat", "Maine Coon"), ("cat", "ragdoll"), ("rabbit", "lop-eared bunny"), ("dog", "spaniel"),
    ("dog", "staffie"), ("cat", "Siamese")]  # fmt: skip
PET_NAMES = ["Pixel", "Biscuit", "Juno", "Mango", "Pepper", "Ziggy", "Olive", "Waffles", "Nimbus", "Tofu",
    "Basil", "Luna", "Otto", "Clementine", "Bramble", "Kiwi"]  # fmt: skip
AILMENTS = [("a sprained paw", "six weeks of rest"), ("an ear infection", "drops twice a day"),
    ("a bad tooth that had to come out", "soft food for a fortnight"), ("a skin allergy", "a special diet"),
    ("worms, gross", "tablets for a week"), ("a dodgy hip", "anti-inflammatories and short walks")]  # fmt: skip
HOBBIES = [("pottery", "the community arts centre"), ("bouldering", "the climbing wall by the station"),
    ("salsa", "a dance studio above the bakery"), ("watercolour painting", "the library"),
    ("rowing", "the river club"), ("Japanese", "an evening school"), ("choir singing", "St Anne's church hall"),
    ("woodworking", "a makerspace in the old mill"), ("tennis", "the park courts"),
    ("life drawing", "a gallery on Quay Street"), ("sourdough baking", "a cookery school"),
    ("kickboxing", "the gym on Carver Road")]  # fmt: skip
QUIT_REASONS = ["my shoulder couldn't take it", "the teacher left and it fell apart", "the schedule clashed with work",
    "it got way too expensive", "honestly I was just bored of it"]  # fmt: skip
CITIES = [("Lisbon", "the tram up to the castle", "pastéis de nata", "the Alfama"),
    ("Kyoto", "the bamboo forest at dawn", "the matcha everything", "Fushimi Inari"),
    ("Edinburgh", "climbing Arthur's Seat", "haggis bonbons", "the Old Town closes"),
    ("Copenhagen", "cycling along the harbour", "smørrebrød", "Christiania"),
    ("Marrakech", "the souks at night", "the tagine", "the Majorelle garden"),
    ("Reykjavik", "the hot springs", "the lamb soup", "the Sun Voyager"),
    ("Naples", "the pizza crawl", "sfogliatella", "Pompeii"), ("Vienna", "the opera", "Sachertorte", "the Naschmarkt"),
    ("Montreal", "the jazz festival", "poutine", "Mount Royal"), ("Seville", "a flamenco show", "salmorejo",
    "the Alcázar"), ("Krakow", "the salt mine", "pierogi", "Kazimierz"), ("Hanoi", "the motorbike food tour",
    "bún chả", "the Old Quarter")]  # fmt: skip
COMPANIONS = ["my partner", "my best mate from uni", "my mum", "my old colleague Nadia", "my brother", "my flatmate"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December"]  # fmt: skip
RELATIVES = ["sister", "brother", "cousin"]
PEOPLE = ["Aisha", "Ben", "Carla", "Dev", "Elena", "Finn", "Gita", "Hugo", "Iris", "Jake", "Kemi", "Leo", "Mira",
    "Nils", "Olga", "Pablo", "Rosa", "Sven", "Tara", "Uma", "Viktor", "Wen", "Yusuf", "Zoe"]  # fmt: skip
VENUES = ["a vineyard outside Porto", "a barn in the Cotswolds", "a beach in Cornwall", "a castle near Dublin",
    "her fiancé's village in Greece", "a registry office and then a pub", "a lake house in Sweden"]  # fmt: skip
PROCEDURES = [("had a hip replacement", "walking without the frame"), ("had cataract surgery", "reading again"),
    ("had a knee operation", "doing the stairs again"),
    ("had a small heart procedure", "back at the allotment")]  # fmt: skip
INJURIES = [("ankle", "stepping off a kerb badly"), ("wrist", "falling off my bike"), ("back", "lifting the sofa"),
    ("knee", "slipping on wet leaves"), ("shoulder", "sleeping on it wrong, apparently")]  # fmt: skip
REMEDIES = ["yoga twice a week", "swimming, it sorted mine out", "a proper physio, not the gym guy",
    "ice and a compression sleeve", "a standing desk and lots of walking"]  # fmt: skip
AREAS = [("Riverside", "the river"), ("Hillcrest", "the park"), ("the Old Town", "the station"),
    ("Westgate", "my partner's office"), ("Marsh End", "the school"), ("Canal Quarter", "the new gym")]  # fmt: skip
RACES = [("the city half marathon", "1:52"), ("a 10k trail race", "58 minutes"), ("a sprint triathlon", "1:31"),
    ("the Bridges 5k", "24 minutes"), ("a 100 km charity cycle", "five and a half hours")]  # fmt: skip
BOOKS = [("The Glass Orchard", "Mira Halden"), ("Salt and Starlight", "J. Okoro"), ("A Map of Small Hours",
    "Tessa Lind"), ("Under the Copper Sky", "R. Basu"), ("The Night Ferry", "Anders Holm"), ("Winter Ledger",
    "Claire Dumont"), ("The Quiet Engine", "Sol Mendes"), ("Paper Lanterns", "Keiko Arai")]  # fmt: skip
PREFERENCES = [
    ("I'd honestly take a sleeper train over a plane any day, flying makes me so anxious.",
     "Would {p} rather avoid air travel on a holiday?", "Yes, flying makes them anxious; they prefer trains"),
    ("Crowds drain me. Give me a quiet cabin with no wifi and I'm happy.",
     "Would {p} enjoy a busy music festival?", "Probably not; they prefer quiet and dislike crowds"),
    ("I can't do spicy food at all, my stomach just says no.",
     "Is a fiery vindaloo a good dinner choice for {p}?", "No, they can't handle spicy food"),
    ("Mornings are my thing, I'm up at five and out running before anyone's awake.",
     "Is {p} an early riser?", "Yes, up at five to run"),
    ("I've gone fully vegetarian since the summer, no meat at all.",
     "Would {p} order the steak at a restaurant?", "No, they are vegetarian"),
    ("Horror films? Absolutely not, I'd be sleeping with the lights on for a week.",
     "Would {p} be up for a scary movie night?", "No, they avoid horror films"),
    ("Museums bore me to tears, I'd much rather be outdoors hiking.",
     "Would {p} prefer a day in the hills to an afternoon at a gallery?", "Yes, they prefer hiking to museums"),
    ("I'm allergic to cats, sadly, my eyes swell up within minutes.",
     "Could {p} comfortably stay at a house with a kitten?", "No, they are allergic to cats"),
]  # fmt: skip


def _when(moment: datetime) -> str:
    return f"{moment.strftime('%I:%M %p').lstrip('0').lower()} on {moment.day} {moment:%B, %Y}"


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


INTERJECTIONS = {
    "british": (["Blimey, ", "Right, ", "Honestly, ", "Cheers. "], [" Brilliant.", " Mad, innit.", ""]),
    "texter": (["omg ", "ngl ", "lol ", "ok so "], [" lol", " tbh", " haha", ""]),
    "german": (["Na ja, ", "Also, ", "Genau. ", "Ach, "], [" Wahnsinn.", " Oder?", ""]),
    "spanish": (["Bueno, ", "Oye, ", "Vale, ", "Madre mía, "], [" ¿sabes?", " jaja", ""]),
    "french": (["Bon, ", "Alors, ", "Oh là là, ", "Bref, "], [" C'est la vie.", " Voilà.", ""]),
    "hindi": (["Arre, ", "Yaar, ", "Accha, ", "Haan, "], [" na?", " yaar.", ""]),
    "plain": ([""], [""]),
}


def styled(text: str, style: str, rng: random.Random) -> str:
    """The same words in a speaker's voice: an interjection now and then, a texter's lower case."""
    heads, tails = INTERJECTIONS[style]
    if rng.random() < 0.3:
        head = rng.choice(heads)
        text = head + (text[0].lower() + text[1:] if head and not head.endswith(". ") else text)
    if rng.random() < 0.25:
        text = text.rstrip(".") + rng.choice(tails)
    if style == "texter":
        text = text.lower().replace("you ", "u ").replace(" are ", " r ").replace("going to", "gonna")
    return text


@dataclass
class Person:
    name: str
    style: str
    jobs: list[tuple[str, str]]
    pet: tuple[str, str, str, tuple[str, str]]  # species, breed, name, (ailment, treatment)
    hobbies: list[tuple[str, str]]
    quit_reason: str
    trips: list[tuple[tuple[str, str, str, str], str, str]]  # city info, month, companion
    relative: tuple[str, str, str]  # relation, name, venue
    parent: tuple[str, tuple[str, str]]
    injury: tuple[str, str]
    remedy: str
    move: tuple[str, str]
    race: tuple[str, str]
    book: tuple[str, str]
    prefs: list[tuple[str, str, str]]
    kinds: set[str] = field(default_factory=set)


@dataclass
class Event:
    kind: str
    teller: Person
    other: Person
    session: int
    turns: list[tuple[str, str]]  # ("P" teller / "O" other, text)
    anchors: dict[str, int]
    ids: dict[str, str] = field(default_factory=dict)
    date: datetime | None = None


def _person(name: str, style: str, rng: random.Random, taken: dict[str, set[Any]]) -> Person:
    def pick(pool: list[Any], key: str, n: int = 1) -> list[Any]:
        free = [x for x in pool if x not in taken.setdefault(key, set())]
        chosen = rng.sample(free, n)
        taken[key].update(chosen)
        return chosen

    companies, roles = pick(COMPANIES, "co", 2), pick(ROLES, "role", 2)
    species, breed = pick(PETS, "pet")[0]
    trips = [(city, rng.choice(MONTHS), rng.choice(COMPANIONS)) for city in pick(CITIES, "city", 2)]
    person = Person(
        name=name,
        style=style,
        jobs=list(zip(companies, roles, strict=True)),
        pet=(species, breed, pick(PET_NAMES, "petname")[0], rng.choice(AILMENTS)),
        hobbies=pick(HOBBIES, "hobby", 2),
        quit_reason=rng.choice(QUIT_REASONS),
        trips=trips,
        relative=(rng.choice(RELATIVES), pick(PEOPLE, "people")[0], rng.choice(VENUES)),
        parent=(rng.choice(["Mum", "Dad"]), rng.choice(PROCEDURES)),
        injury=rng.choice(INJURIES),
        remedy=rng.choice(REMEDIES),
        move=pick(AREAS, "area")[0],
        race=pick(RACES, "race")[0],
        book=pick(BOOKS, "book")[0],
        prefs=pick(PREFERENCES, "pref", 2),
    )
    chains = ["job", "pet", "hobby", "trip0", "trip1", "family", "parent", "injury", "move", "race", "book"]
    person.kinds = {c for c in chains if rng.random() < 0.85} | {"job"}
    return person


def _blocks(p: Person, o: Person, rng: random.Random) -> list[tuple[str, list[tuple[str, str]], dict[str, int]]]:
    """Every event of one person, in the order it must happen: (kind, turns, anchors)."""
    c = rng.choice
    (co1, role1), (co2, role2) = p.jobs
    species, breed, pet, (ailment, treatment) = p.pet
    (h1, v1), (h2, v2) = p.hobbies
    rel, rel_name, venue = p.relative
    parent, (procedure, recovered) = p.parent
    body, how = p.injury
    area, near = p.move
    race, race_time = p.race
    title, author = p.book
    out: list[tuple[str, list[tuple[str, str]], dict[str, int]]] = []
    if "job" in p.kinds:
        out.append(
            (
                "job_initial",
                [
                    ("O", c(["How's work treating you?", "Still busy at work?"])),
                    (
                        "P",
                        c(
                            [
                                f"Same old. Four years as a {role1} at {co1} now, can you believe it.",
                                f"Busy! {co1} has me doing {role1} stuff from eight till late.",
                            ]
                        ),
                    ),
                ],
                {"evidence": 1},
            )
        )
        out.append(
            (
                "job_change",
                [
                    (
                        "P",
                        c(
                            [
                                f"Big news: I handed in my notice! From Monday I'm a {role2} at {co2}.",
                                f"So I accepted the offer from {co2}. Goodbye {role1} life, hello {role2}.",
                            ]
                        ),
                    ),
                    ("O", c(["No way, congratulations!!", "Wow, that's huge. Well deserved."])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                "job_followup",
                [
                    ("O", c([f"Settling in at {co2}?", "How's the new place?"])),
                    (
                        "P",
                        c(
                            [
                                "Really well actually, they've just put me in charge of a team of four.",
                                "Good! I got handed my own team last week, four people reporting to me now.",
                            ]
                        ),
                    ),
                ],
                {"evidence": 1},
            )
        )
    if "pet" in p.kinds:
        out.append(
            (
                "pet_adopt",
                [
                    (
                        "P",
                        c(
                            [
                                f"We finally did it, we picked up a {breed} from the rescue centre on Saturday. {pet}!",
                                f"Meet {pet}: a {breed} we brought home from the shelter this weekend.",
                            ]
                        ),
                    ),
                    ("O", c([f"Stop it, {pet} is adorable.", "Aww, I need photos immediately."])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                "pet_vet",
                [
                    ("O", c([f"Is {pet} okay? You said something about the vet.", f"How did {pet}'s appointment go?"])),
                    (
                        "P",
                        c(
                            [
                                f"It was {ailment}, so it's {treatment}, poor thing.",
                                f"Turned out to be {ailment}. {treatment.capitalize()}, and lots of sulking.",
                            ]
                        ),
                    ),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
    if "hobby" in p.kinds:
        out.append(
            (
                "hobby_start",
                [
                    (
                        "P",
                        c(
                            [
                                f"I signed up for {h1} at {v1}! First session was on Tuesday.",
                                f"Guess who's doing {h1} now. Classes at {v1}, Tuesdays.",
                            ]
                        ),
                    ),
                    ("O", c(["Love that for you.", "Ooh, you'll have to show me what you make."])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                "hobby_switch",
                [
                    (
                        "P",
                        c(
                            [
                                f"I've stopped going to {h1}, {p.quit_reason}. I'm trying {h2} at {v2} now.",
                                f"Quit {h1} ({p.quit_reason}). Started {h2} instead, at {v2}.",
                            ]
                        ),
                    ),
                    ("O", c(["Fair enough, onwards.", "Ah shame, but the new one sounds fun."])),
                ],
                {"evidence": 0},
            )
        )
    for i in (0, 1):
        if f"trip{i}" not in p.kinds:
            continue
        (city, highlight, food, place), month, companion = p.trips[i]
        out.append(
            (
                f"trip{i}_plan",
                [
                    (
                        "P",
                        c(
                            [
                                f"Booked it! {city} in {month}, {companion} is coming with me.",
                                f"Flights to {city} are sorted for {month}. Going with {companion}.",
                            ]
                        ),
                    ),
                    ("O", c(["Jealous!", "Oh amazing, you'll love it."])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                f"trip{i}_tips",
                [
                    (
                        "P",
                        c(
                            [
                                f"You've been to {city}, right? What should we not miss?",
                                f"Any tips for {city}? I want to do it properly.",
                            ]
                        ),
                    ),
                    (
                        "O",
                        c(
                            [
                                f"Definitely go to {place}, and you have to eat {food}.",
                                f"{place} for sure. And order {food}, trust me.",
                            ]
                        ),
                    ),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
        out.append(
            (
                f"trip{i}_report",
                [
                    ("O", c([f"Welcome back from {city}! How was it?", "You're back! Tell me everything."])),
                    (
                        "P",
                        c(
                            [
                                f"Unreal. The best bit was {highlight}, I'd go again tomorrow.",
                                f"So good. Nothing beat {highlight}.",
                            ]
                        ),
                    ),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
    if "family" in p.kinds:
        out.append(
            (
                "family_news",
                [
                    (
                        "P",
                        c(
                            [
                                f"My {rel} {rel_name} is getting married! It's going to be at {venue}.",
                                f"{rel_name} (my {rel}) just got engaged, and they've booked {venue} already.",
                            ]
                        ),
                    ),
                    ("O", c(["That's so lovely, congrats to them!", "Oh a wedding! What are you wearing?"])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                "family_wedding",
                [
                    ("O", c([f"How was {rel_name}'s big day?", "How was the wedding?"])),
                    (
                        "P",
                        c(
                            [
                                "Perfect, apart from me crying through my whole speech.",
                                "Beautiful. I gave the speech and somehow didn't cry until the end.",
                            ]
                        ),
                    ),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
    if "parent" in p.kinds:
        out.append(
            (
                "parent_op",
                [
                    (
                        "P",
                        c(
                            [
                                f"{parent} {procedure} on Thursday, so I've been at the hospital a lot.",
                                f"Bit of a week: {parent} {procedure}. All went fine though.",
                            ]
                        ),
                    ),
                    ("O", c(["Oh no, sending love to them.", "Glad it went okay. How are you holding up?"])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                "parent_better",
                [
                    (
                        "P",
                        c(
                            [
                                f"Good news, {parent} is {recovered}!",
                                f"{parent}'s {recovered} already, stubborn as ever.",
                            ]
                        ),
                    ),
                    ("O", c(["That's such a relief.", "Brilliant news."])),
                ],
                {"evidence": 0},
            )
        )
    if "injury" in p.kinds:
        out.append(
            (
                "injury",
                [
                    ("P", c([f"I did my {body} in, {how}. Can barely move it.", f"Ugh, hurt my {body} {how}."])),
                    ("O", c([f"Ouch. Honestly, try {p.remedy}.", f"Been there. What worked for me was {p.remedy}."])),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
    if "move" in p.kinds:
        out.append(
            (
                "move",
                [
                    (
                        "P",
                        c(
                            [
                                f"We got the flat in {area}! Moving in a fortnight, much closer to {near}.",
                                f"Keys collected. We're in {area} now, five minutes from {near}.",
                            ]
                        ),
                    ),
                    ("O", c(["Housewarming when?", "Amazing, new neighbourhood!"])),
                ],
                {"evidence": 0},
            )
        )
    if "race" in p.kinds:
        out.append(
            (
                "race_plan",
                [
                    (
                        "P",
                        c(
                            [
                                f"I've entered {race}. Training starts now, send help.",
                                f"Signed up for {race}, so it's early nights from now on.",
                            ]
                        ),
                    ),
                    ("O", c(["You'll smash it.", "Madness. Good luck!"])),
                ],
                {"evidence": 0},
            )
        )
        out.append(
            (
                "race_result",
                [
                    ("O", c(["So?? How did race day go?", f"Did you survive {race}?"])),
                    (
                        "P",
                        c(
                            [
                                f"Done! {race_time}, and I didn't walk once.",
                                f"Crossed the line in {race_time}, legs are jelly.",
                            ]
                        ),
                    ),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
    if "book" in p.kinds:
        out.append(
            (
                "book_ask",
                [
                    (
                        "P",
                        c(
                            [
                                "I need something good to read on the commute, any ideas?",
                                "Reading slump. Recommend me something?",
                            ]
                        ),
                    ),
                    (
                        "O",
                        c(
                            [
                                f"{title} by {author}. I couldn't put it down.",
                                f"Try {title}, {author} writes like a dream.",
                            ]
                        ),
                    ),
                ],
                {"ask": 0, "evidence": 1},
            )
        )
        out.append(
            (
                "book_done",
                [
                    (
                        "P",
                        c(
                            [
                                f"Finished {title}, the ending wrecked me.",
                                f"You were right about {title}, I read it in two sittings.",
                            ]
                        ),
                    ),
                    ("O", c(["Told you!", "Right?! That last chapter."])),
                ],
                {"evidence": 0},
            )
        )
    for i, (statement, _, _) in enumerate(p.prefs):
        out.append(
            (f"pref{i}", [("P", statement), ("O", c(["Ha, noted.", "Fair, each to their own."]))], {"evidence": 0})
        )
    return out


def _questions(p: Person, o: Person, ev: dict[str, Event], rng: random.Random) -> list[dict[str, Any]]:
    """Questions about one person's events: paraphrases, never the evidence's own phrasing."""
    qa: list[dict[str, Any]] = []

    def ask(question: str, answer: str, evidence: list[tuple[str, str]], category: int) -> None:
        if all(kind in ev for kind, _ in evidence):
            qa.append({"question": question, "answer": answer, "category": category,
                       "evidence": sorted({ev[kind].ids[anchor] for kind, anchor in evidence})})  # fmt: skip

    def date(kind: str) -> str:
        moment = ev[kind].date if kind in ev else None
        return _day(moment) if moment else ""

    n = p.name
    (co1, role1), (co2, role2) = p.jobs
    species, breed, pet, (ailment, treatment) = p.pet
    (h1, _), (h2, v2) = p.hobbies
    rel, rel_name, venue = p.relative
    parent, (procedure, recovered) = p.parent
    body, _ = p.injury
    area, near = p.move
    race, race_time = p.race
    title, author = p.book
    e = "evidence"

    def ask2(phrasings: tuple[str, str], answer: str, evidence: list[tuple[str, str]], category: int) -> None:
        """One of two phrasings: one keeps a key word of the evidence, the other paraphrases it all."""
        ask(rng.choice(phrasings), answer, evidence, category)

    ask2((f"Which company did {n} work for before moving to {co2}?", f"Where was {n} employed before the switch?"),
         co1, [("job_initial", e), ("job_change", e)], 1)  # fmt: skip
    ask2((f"What role did {n} take at {co2}?", f"What job title does {n} hold after switching companies?"), role2,
         [("job_change", e)], 4)  # fmt: skip
    ask2((f"When did {n} quit to join {co2}?", f"When did {n} resign to go somewhere else?"),
         f"Shortly before {date('job_change')}", [("job_change", e)], 2)  # fmt: skip
    ask2((f"What was {n} put in charge of at {co2}?", f"What responsibility was {n} given weeks into the new role?"),
         "A team of four", [("job_followup", e)], 4)  # fmt: skip
    ask(
        f"What was {n}'s job before the career move, and which company is {n} with now?",
        f"{role1}; {co2}",
        [("job_initial", e), ("job_change", e)],
        1,
    )
    ask2((f"What is the name of the {species} {n} got from the rescue?", f"What did {n} call the {species}?"), pet,
         [("pet_adopt", e)], 4)  # fmt: skip
    ask2((f"When did {n} adopt {pet}?", f"When did {n}'s household gain a new animal?"),
         f"The weekend before {date('pet_adopt')}", [("pet_adopt", e)], 2)  # fmt: skip
    ask2((f"What did the vet find wrong with {pet}?", f"What health problem did {n}'s {species} have?"), ailment,
         [("pet_vet", e)], 4)  # fmt: skip
    ask(
        f"What breed is {n}'s {species}, and what treatment did it need?",
        f"{breed}; {treatment}",
        [("pet_adopt", e), ("pet_vet", e)],
        1,
    )
    ask2((f"Which class did {n} sign up for first, and what did {n} switch to?",
          f"What pastime did {n} take up at first, and what replaced it?"), f"{h1}, then {h2}",
         [("hobby_start", e), ("hobby_switch", e)], 1)  # fmt: skip
    ask2((f"Why did {n} stop doing {h1}?", f"Why did {n} give up the first pastime?"), p.quit_reason,
         [("hobby_switch", e)], 4)  # fmt: skip
    ask2((f"When did {n} start {h1}?", f"When did {n} begin the lessons that were later dropped?"),
         f"The Tuesday before {date('hobby_start')}", [("hobby_start", e)], 2)  # fmt: skip
    ask2((f"Where does {n} do {h2}?", f"Where does {n} practise the newer hobby?"), v2, [("hobby_switch", e)], 4)
    cities = []
    for i in (0, 1):
        if f"trip{i}_plan" not in ev:
            continue
        (city, highlight, food, place), month, companion = p.trips[i]
        cities.append(city)
        ask(f"Who went with {n} to {city}?", companion, [(f"trip{i}_plan", e)], 4)
        ask(f"What food did {o.name} tell {n} to try in {city}?", food, [(f"trip{i}_tips", e)], 4)
        ask2((f"What was the best part of {n}'s trip to {city}?", f"What did {n} enjoy most about {city}?"),
             highlight, [(f"trip{i}_report", e)], 4)  # fmt: skip
        ask(f"When did {n} get back from {city}?", f"Around {date(f'trip{i}_report')}", [(f"trip{i}_report", e)], 2)
        ask(
            f"Which sight did {o.name} suggest for the holiday {n} took with {companion}?",
            place,
            [(f"trip{i}_plan", e), (f"trip{i}_tips", e)],
            1,
        )
        ask(
            f"In which month did {n} plan to travel to {city}, and what stood out once there?",
            f"{month}; {highlight}",
            [(f"trip{i}_plan", e), (f"trip{i}_report", e)],
            1,
        )
    if len(cities) == 2:
        ask(
            f"Which two cities did {n} visit on holiday?",
            " and ".join(cities),
            [("trip0_plan", e), ("trip1_plan", e)],
            1,
        )
    ask2((f"Where will {rel_name}'s wedding be held?", f"Where is {n}'s {rel} holding the ceremony?"), venue,
         [("family_news", e)], 4)  # fmt: skip
    ask(f"What happened during {n}'s speech at {rel_name}'s wedding?", "Cried (at the end)", [("family_wedding", e)], 4)
    ask2((f"When did {n} tell {o.name} that {rel_name} was engaged?",
          f"When did {n} announce that a relative was engaged?"), f"Around {date('family_news')}",
         [("family_news", e)], 2)  # fmt: skip
    ask(
        f"Which of {n}'s parents had surgery, and how is the recovery going?",
        f"{parent}; {recovered}",
        [("parent_op", e), ("parent_better", e)],
        1,
    )
    ask2((f"When was {n}'s {parent.lower()} in hospital?", f"When did {n}'s parent have the operation?"),
         f"The Thursday before {date('parent_op')}", [("parent_op", e)], 2)  # fmt: skip
    ask(f"What did {o.name} suggest for {n}'s {body} injury?", p.remedy, [("injury", e)], 4)
    ask2((f"Which area did {n} move to?", f"Which neighbourhood did {n} relocate to?"), area, [("move", e)], 4)
    ask2((f"When did {n} move house?", f"When did {n} change address?"), f"Around {date('move')}", [("move", e)], 2)
    ask(
        f"What race did {n} enter, and what was the finishing time?",
        f"{race}; {race_time}",
        [("race_plan", e), ("race_result", e)],
        1,
    )
    ask2((f"What time did {n} finish the race in?", f"How long did it take {n} to complete it?"), race_time,
         [("race_result", e)], 4)  # fmt: skip
    ask2((f"Which book did {o.name} recommend to {n}?", f"Which novel did {o.name} suggest {n} read?"),
         f"{title} by {author}", [("book_ask", e)], 4)  # fmt: skip
    ask(
        f"What did {n} think of {title}, and who wrote it?",
        f"Loved it; {author}",
        [("book_ask", e), ("book_done", e)],
        1,
    )
    for i, (_, question, answer) in enumerate(p.prefs):
        ask(question.format(p=n), answer, [(f"pref{i}", e)], 3)
    if "job_change" in ev and "move" in ev:
        first = "changing jobs" if ev["job_change"].date <= ev["move"].date else "moving house"  # type: ignore[operator]
        ask(f"Which came first for {n}: the new employer or the new home?", first, [("job_change", e), ("move", e)], 2)
    return qa


def _filler(rng: random.Random, me: Person, you: Person, state: set[str]) -> str:
    """A turn about nothing asked: the same vocabulary as the answers, about someone else or no one."""
    c = rng.choice
    who, city, month = c(PEOPLE), c(CITIES)[0], c(MONTHS)
    species, breed = c(PETS)
    hobby, venue = c(HOBBIES)
    company, role = c(COMPANIES), c(ROLES)
    title, _ = c(BOOKS)
    options = [
        f"My colleague {who} just adopted a {breed}, the office is obsessed.",
        f"{who} from work handed in their notice too, off to {company} apparently.",
        f"Thinking I might try {hobby} at some point, {who} swears by it.",
        f"{who} says {city} is overrated, which I refuse to believe.",
        f"Have you ever been to {city} in {month}? Thinking about it for next year.",
        f"My neighbour's {species} was howling at three in the morning again.",
        f"Did I tell you {who}'s cousin is getting married at a castle? Everyone's getting married.",
        f"My {c(['back', 'knee', 'neck', 'wrist'])} is stiff from the desk, I need to move more.",
        f"I've had {title} on my shelf for months and still haven't opened it.",
        f"Work is chaos, we're hiring a {role} and nobody good applies.",
        "The weather's been grim, it rained every single day this week.",
        "Made a massive lasagne on Sunday, eating it till Thursday.",
        f"Binged a whole series about {c(['a bakery', 'a heist', 'a hospital', 'a murder in Oslo'])} last night.",
        "I slept eleven hours on Saturday. Eleven!",
        f"{who} is organising a pub quiz, want in?",
        f"Saw a flyer for {hobby} classes at {venue}, looked fun.",
        f"My {c(RELATIVES)} keeps asking when I'm visiting, guilt trip incoming.",
        f"{who}'s dad had an operation last month, he's fine now thankfully.",
        f"Someone at the gym ran {c(RACES)[0]} in under an hour, show-off.",
        "There's a new ramen place by the station, queue round the block.",
        f"My flatmate wants a {species} but the landlord said no.",
        "The train was cancelled again this morning, classic.",
        "Tiny win: I finally fixed the wobbly shelf.",
        "Honestly I need a holiday, even a weekend somewhere would do.",
        f"I keep meaning to book a {c(['dentist', 'haircut', 'GP'])} appointment and keep forgetting.",
        f"We're doing a team away day at {company}'s old offices, weird vibe.",
    ]
    own = me.pet[2] if "pet_adopt" in state else None
    job = me.jobs[1][0] if "job_change" in state else me.jobs[0][0]
    options += [f"Long day at {job}, I'm shattered.", f"Meetings all afternoon at {job}, send snacks."]
    if own:
        options += [f"{own} stole a sock again this morning.", f"{own} discovered the sofa, it's over for me.",
                    f"Took {own} to the park, chaos as usual."]  # fmt: skip
    if "hobby_start" in state and "hobby_switch" not in state:
        options.append(f"{me.hobbies[0][0].capitalize()} was hard this week, my teacher is relentless.")
    if "hobby_switch" in state:
        options.append(f"Loving {me.hobbies[1][0]} so far, way more my pace.")
    return c(options)


def _fresh(rng: random.Random, me: Person, you: Person, state: set[str], used: set[str]) -> str:
    """A filler or a short reaction not yet said in this session."""
    for _ in range(20):
        text = rng.choice(REACTIONS) if rng.random() < 0.3 else _filler(rng, me, you, state)
        if text not in used:
            break
    used.add(text)
    return text


REACTIONS = ["Haha no way.", "That sounds lovely.", "Ugh, same.", "Fair enough!", "Wait, really?", "Ha, classic.",
    "Oh I love that.", "Sounds like a plan.", "So true.", "Oof.", "Nice one!", "I mean... fair.",
    "Go on then."]  # fmt: skip


def _conversation(index: int, rng: random.Random) -> dict[str, Any]:
    taken: dict[str, set[Any]] = {}
    name_a, name_b = NAMES[index % len(NAMES)]
    style_a, style_b = rng.sample(STYLES, 2)
    a, b = _person(name_a, style_a, rng, taken), _person(name_b, style_b, rng, taken)
    sessions = rng.randint(15, 25)
    events: list[Event] = []
    for teller, other in ((a, b), (b, a)):
        blocks = _blocks(teller, other, rng)
        # Each chain's events land in increasing sessions, spread over the months.
        chain_order = sorted(range(len(blocks)), key=lambda i: (blocks[i][0].split("_")[0], i))
        by_chain: dict[str, list[int]] = {}
        for i in chain_order:
            by_chain.setdefault(blocks[i][0].split("_")[0], []).append(i)
        for members in by_chain.values():
            picked = sorted(rng.sample(range(1, sessions + 1), len(members)))
            for i, session in zip(members, picked, strict=True):
                kind, turns, anchors = blocks[i]
                events.append(Event(kind, teller, other, session, turns, anchors))
    start = datetime(rng.choice([2023, 2024]), rng.randint(1, 6), rng.randint(1, 28), 0, 0)
    conversation: dict[str, Any] = {"speaker_a": a.name, "speaker_b": b.name}
    moment = start
    state: dict[str, set[str]] = {a.name: set(), b.name: set()}
    for number in range(1, sessions + 1):
        moment += timedelta(days=rng.randint(4, 16), hours=rng.randint(0, 12), minutes=rng.randint(0, 59))
        moment = moment.replace(hour=rng.randint(8, 22))
        conversation[f"session_{number}_date_time"] = _when(moment)
        here = [e for e in events if e.session == number]
        rng.shuffle(here)
        target = rng.randint(15, 30)
        used: set[str] = set()
        turns: list[tuple[Person, str, tuple[Event, int] | None]] = []
        first = rng.choice([a, b])
        second = b if first is a else a
        turns.append((first, rng.choice([f"Hey {second.name}! How's your week been?", f"Hiya {second.name}!",
                                         "Morning! Got a minute?", "Heyyy, long time."]), None))  # fmt: skip
        turns.append(
            (second, rng.choice(["Hey! Not bad, busy. You?", "Hi! All good here.", "Always. What's up?"]), None)
        )
        fillers_left = max(target - 4 - sum(len(e.turns) for e in here), 2)
        per_gap = fillers_left // (len(here) + 1)
        for event in here:
            for _ in range(per_gap + rng.randint(-1, 1)):
                speaker = b if turns[-1][0] is a else a
                listener = a if speaker is b else b
                turns.append((speaker, _fresh(rng, speaker, listener, state[speaker.name], used), None))
            lead = event.teller if event.turns[0][0] == "P" else event.other
            if turns[-1][0] is lead:
                turns.append((event.other if lead is event.teller else event.teller, rng.choice(REACTIONS), None))
            for position, (role, text) in enumerate(event.turns):
                turns.append((event.teller if role == "P" else event.other, text, (event, position)))
            state[event.teller.name].add(event.kind)
        while len(turns) < target - 2:
            speaker = b if turns[-1][0] is a else a
            listener = a if speaker is b else b
            turns.append((speaker, _fresh(rng, speaker, listener, state[speaker.name], used), None))
        speaker = b if turns[-1][0] is a else a
        turns.append((speaker, rng.choice(["Anyway, I have to run. Talk soon!", "Right, dinner's ready, bye!",
                                           "Okay I'm off, speak next week?"]), None))  # fmt: skip
        turns.append((a if speaker is b else b, rng.choice(["Bye! x", "Speak soon!", "Later!"]), None))
        rendered = []
        for position, (speaker, text, origin) in enumerate(turns, start=1):
            dia_id = f"D{number}:{position}"
            rendered.append({"speaker": speaker.name, "dia_id": dia_id, "text": styled(text, speaker.style, rng)})
            if origin is not None:
                event, at = origin
                event.date = moment
                for anchor, offset in event.anchors.items():
                    if offset == at:
                        event.ids[anchor] = dia_id
        conversation[f"session_{number}"] = rendered
    qa: list[dict[str, Any]] = []
    for person, other in ((a, b), (b, a)):
        mine = {e.kind: e for e in events if e.teller is person}
        qa += _questions(person, other, mine, rng)
    both = [{e.teller.name: e for e in events if e.kind == "pet_adopt"}]
    if len(both[0]) == 2:
        first = min(both[0].values(), key=lambda e: (e.session, e.ids["evidence"]))
        qa.append({"question": f"Who got a pet first, {a.name} or {b.name}?", "answer": first.teller.name,
                   "category": 2, "evidence": sorted(e.ids["evidence"] for e in both[0].values())})  # fmt: skip
    return {"sample_id": f"dev-{index + 1}", "conversation": conversation, "qa": qa}


def build(seed: int = 17, samples: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_conversation(i, rng) for i in range(samples)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.devset", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the LoCoMo-format JSON")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args(argv)
    data = build(args.seed, args.samples)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    turns = sum(len(v) for s in data for k, v in s["conversation"].items() if isinstance(v, list))
    questions = [q for s in data for q in s["qa"]]
    by_category: dict[int, int] = {}
    for q in questions:
        by_category[q["category"]] = by_category.get(q["category"], 0) + 1
    sessions = sum(1 for s in data for k in s["conversation"] if k.endswith("_date_time"))
    print(f"{len(data)} samples, {sessions} sessions, {turns} turns, {len(questions)} questions {by_category}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
