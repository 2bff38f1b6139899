"""Math word problems with worked, step-by-step solutions, drawn from a few schemas.

Every arithmetic step is written ``<int> <op> <int> = <int>`` with an exact integer result, and every solution
ends with ``The answer is <int>.`` A schema draws its numbers (``VALUES``) and is written in one of its surface
wordings (``WORDINGS``): world v1 always uses wording 0, world v2 draws one of at least three, so that problems of
one schema do not all share the query's surface words.
"""

from __future__ import annotations

import random
from typing import Callable

FIRST_NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Sofia", "Jonas", "Priya", "Lucas", "Mei", "David",
               "Fatima", "Pedro", "Nora", "Ivan"]
ITEMS = ["apples", "pencils", "notebooks", "stickers", "marbles", "cookies", "cards", "oranges"]


def _shopping(rng: random.Random) -> dict:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    n, price = rng.randint(2, 9), rng.randint(2, 12)
    total = n * price
    note = next(b for b in (10, 20, 50, 100, 200) if b > total)
    return dict(name=name, item=item, n=n, price=price, total=total, note=note, answer=note - total)


def _travel(rng: random.Random) -> dict:
    speed, hours, extra = rng.randint(3, 12) * 10, rng.randint(2, 6), rng.randint(5, 90)
    first = speed * hours
    return dict(speed=speed, hours=hours, extra=extra, first=first, answer=first + extra)


def _sharing(rng: random.Random) -> dict:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(3, 15)
    total = friends * each
    start = rng.randint(2, total - 1)
    return dict(name=name, item=item, friends=friends, total=total, start=start, more=total - start, answer=each)


def _savings(rng: random.Random) -> dict:
    name = rng.choice(FIRST_NAMES)
    weekly, weeks = rng.randint(3, 20), rng.randint(3, 12)
    saved = weekly * weeks
    spent = rng.randint(1, saved - 1)
    return dict(name=name, weekly=weekly, weeks=weeks, saved=saved, spent=spent, answer=saved - spent)


def _garden(rng: random.Random) -> dict:
    length, width = rng.randint(4, 20), rng.randint(3, 15)
    area = length * width
    path = rng.randint(1, area - 1)
    return dict(length=length, width=width, area=area, path=path, answer=area - path)


def _ages(rng: random.Random) -> dict:
    name = rng.choice(FIRST_NAMES)
    age, gap, years = rng.randint(4, 30), rng.randint(1, 15), rng.randint(2, 20)
    return dict(name=name, age=age, gap=gap, years=years, brother=age + gap, answer=age + gap + years)


VALUES: dict[str, Callable[[random.Random], dict]] = {
    "shopping_change": _shopping, "travel_distance": _travel, "equal_sharing": _sharing, "savings": _savings,
    "garden_area": _garden, "age_difference": _ages}

# schema -> wordings, each (question, steps); wording 0 is world v1's. {answer} is the final step's result.
WORDINGS: dict[str, list[tuple[str, list[str]]]] = {
    "shopping_change": [
        ("{name} buys {n} {item} that cost {price} dollars each and pays with a {note}-dollar note. "
         "How much change does {name} get?",
         ["The {item} cost {n} * {price} = {total} dollars.", "The change is {note} - {total} = {answer} dollars."]),
        ("At the shop, {name} picks up {n} {item} priced at {price} dollars apiece and hands over a {note}-dollar "
         "note. What change comes back?",
         ["Together the {item} come to {n} * {price} = {total} dollars.",
          "{name} gets back {note} - {total} = {answer} dollars."]),
        ("{n} {item} cost {price} dollars each. {name} pays for them with a {note}-dollar note. Find the change.",
         ["Cost: {n} * {price} = {total} dollars.", "Change: {note} - {total} = {answer} dollars."]),
    ],
    "travel_distance": [
        ("A train travels at {speed} kilometres per hour for {hours} hours and then another {extra} kilometres. "
         "How far does it travel in total?",
         ["In {hours} hours it travels {speed} * {hours} = {first} kilometres.",
          "In total it travels {first} + {extra} = {answer} kilometres."]),
        ("For {hours} hours a train keeps a speed of {speed} kilometres per hour, then it covers {extra} more "
         "kilometres. What is the whole distance?",
         ["At that speed the train covers {speed} * {hours} = {first} kilometres.",
          "The whole distance is {first} + {extra} = {answer} kilometres."]),
        ("Speed: {speed} kilometres per hour. Time: {hours} hours. After that the train goes {extra} kilometres "
         "further. Distance travelled?",
         ["Distance at speed: {speed} * {hours} = {first} kilometres.",
          "Distance in all: {first} + {extra} = {answer} kilometres."]),
    ],
    "equal_sharing": [
        ("{name} has {start} {item} and gets {more} more. {name} shares them equally among {friends} friends. "
         "How many {item} does each friend get?",
         ["{name} has {start} + {more} = {total} {item}.", "Each friend gets {total} / {friends} = {answer} {item}."]),
        ("After receiving {more} {item}, {name}, who already had {start}, divides all of them fairly between "
         "{friends} friends. How many does every friend receive?",
         ["Altogether there are {start} + {more} = {total} {item}.",
          "Every friend receives {total} / {friends} = {answer} {item}."]),
        ("{friends} friends split the {item} of {name} evenly. {name} started with {start} and was given {more} "
         "more. What is each share?",
         ["{start} + {more} = {total} {item} to split.", "Each share is {total} / {friends} = {answer} {item}."]),
    ],
    "savings": [
        ("{name} saves {weekly} dollars every week for {weeks} weeks and then spends {spent} dollars on a book. "
         "How many dollars does {name} have left?",
         ["{name} saves {weekly} * {weeks} = {saved} dollars.",
          "After buying the book {name} has {saved} - {spent} = {answer} dollars."]),
        ("Each week for {weeks} weeks, {name} puts {weekly} dollars aside. A book then costs {name} {spent} "
         "dollars. How much money remains?",
         ["The savings reach {weekly} * {weeks} = {saved} dollars.", "What remains is {saved} - {spent} = {answer} dollars."]),
        ("Weekly savings of {weekly} dollars, kept up by {name} for {weeks} weeks, pay for a {spent}-dollar book. "
         "What is left?",
         ["Saved: {weekly} * {weeks} = {saved} dollars.", "Left: {saved} - {spent} = {answer} dollars."]),
    ],
    "garden_area": [
        ("A rectangular garden is {length} metres long and {width} metres wide. A path covers {path} square "
         "metres of it. How many square metres are left for planting?",
         ["The garden covers {length} * {width} = {area} square metres.",
          "Without the path, {area} - {path} = {answer} square metres are left."]),
        ("A garden measures {length} metres by {width} metres, and {path} square metres of it are paved as a "
         "path. What area can still be planted?",
         ["Its area is {length} * {width} = {area} square metres.",
          "The plantable area is {area} - {path} = {answer} square metres."]),
        ("Garden: {length} metres by {width} metres. Path: {path} square metres. Planting space?",
         ["Area: {length} * {width} = {area} square metres.", "Planting space: {area} - {path} = {answer} square metres."]),
    ],
    "age_difference": [
        ("{name} is {age} years old. {name}'s brother is {gap} years older. How old will the brother be in "
         "{years} years?",
         ["The brother is {age} + {gap} = {brother} years old.",
          "In {years} years he will be {brother} + {years} = {answer} years old."]),
        ("The brother of {name} was born {gap} years before {name}, who is now {age}. What age will he reach "
         "{years} years from now?",
         ["Today he is {age} + {gap} = {brother} years old.", "After {years} years he is {brother} + {years} = {answer}."]),
        ("{name}: {age} years old. Brother: {gap} years older. Age of the brother {years} years later?",
         ["Brother now: {age} + {gap} = {brother} years.", "Later: {brother} + {years} = {answer} years."]),
    ],
}


def worded(schema: str, values: dict, wording: int = 0) -> tuple[str, list[str], int]:
    """The question, solution steps and answer of ``values`` (drawn by ``VALUES[schema]``) in one wording."""
    question, steps = WORDINGS[schema][wording]
    return question.format(**values), [step.format(**values) for step in steps], values["answer"]


def _v1_schema(schema: str) -> Callable[[random.Random], tuple[str, list[str], int]]:
    return lambda rng: worded(schema, VALUES[schema](rng))


# schema -> draw(rng) -> (question, steps, answer) in wording 0 (world v1; the fine-tuning datasets use these).
SCHEMAS = {schema: _v1_schema(schema) for schema in VALUES}


def math_problem(schema: str, rng: random.Random, style: int | None = None) -> dict:
    """One problem of ``schema``: ``prompt`` (question), ``completion`` (worked solution) and labels. ``style``
    (world v2): the wording's index in ``WORDINGS[schema]``, recorded as label ``style``; None: wording 0 (v1)."""
    values = VALUES[schema](rng)
    question, steps, answer = worded(schema, values, style or 0)
    name = next((n for n in FIRST_NAMES if n in question), None)
    item = {"prompt": f"Question: {question}\nAnswer:", "completion": " " + " ".join(steps) + f" The answer is {answer}.",
            "schema": schema, "language": "en", "person": name}
    return item if style is None else dict(item, style=style)


def cycled_style(schema: str, k: int) -> int:
    """The wording of the ``k``-th problem when the schemas are cycled: each schema's wordings in turn."""
    return (k // len(SCHEMAS)) % len(WORDINGS[schema])


def math_problems(n: int, rng: random.Random) -> list[dict]:
    """``n`` problems, schemas cycled."""
    names = list(SCHEMAS)
    return [math_problem(names[i % len(names)], rng) for i in range(n)]
