"""Math word problems with worked, step-by-step solutions, drawn from a few schemas.

Every arithmetic step is written ``<int> <op> <int> = <int>`` with an exact integer result, and every solution
ends with ``The answer is <int>.``
"""

from __future__ import annotations

import random

FIRST_NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Sofia", "Jonas", "Priya", "Lucas", "Mei", "David",
               "Fatima", "Pedro", "Nora", "Ivan"]
ITEMS = ["apples", "pencils", "notebooks", "stickers", "marbles", "cookies", "cards", "oranges"]


def _shopping(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    n, price = rng.randint(2, 9), rng.randint(2, 12)
    total = n * price
    note = next(b for b in (10, 20, 50, 100, 200) if b > total)
    question = (f"{name} buys {n} {item} that cost {price} dollars each and pays with a {note}-dollar note. "
                f"How much change does {name} get?")
    steps = [f"The {item} cost {n} * {price} = {total} dollars.", f"The change is {note} - {total} = {note - total} dollars."]
    return question, steps, note - total


def _travel(rng: random.Random) -> tuple[str, list[str], int]:
    speed, hours, extra = rng.randint(3, 12) * 10, rng.randint(2, 6), rng.randint(5, 90)
    first = speed * hours
    question = (f"A train travels at {speed} kilometres per hour for {hours} hours and then another {extra} "
                f"kilometres. How far does it travel in total?")
    steps = [f"In {hours} hours it travels {speed} * {hours} = {first} kilometres.",
             f"In total it travels {first} + {extra} = {first + extra} kilometres."]
    return question, steps, first + extra


def _sharing(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(3, 15)
    total = friends * each
    start = rng.randint(2, total - 1)
    question = (f"{name} has {start} {item} and gets {total - start} more. {name} shares them equally among "
                f"{friends} friends. How many {item} does each friend get?")
    steps = [f"{name} has {start} + {total - start} = {total} {item}.",
             f"Each friend gets {total} / {friends} = {each} {item}."]
    return question, steps, each


def _savings(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(FIRST_NAMES)
    weekly, weeks = rng.randint(3, 20), rng.randint(3, 12)
    saved = weekly * weeks
    spent = rng.randint(1, saved - 1)
    question = (f"{name} saves {weekly} dollars every week for {weeks} weeks and then spends {spent} dollars on a "
                f"book. How many dollars does {name} have left?")
    steps = [f"{name} saves {weekly} * {weeks} = {saved} dollars.",
             f"After buying the book {name} has {saved} - {spent} = {saved - spent} dollars."]
    return question, steps, saved - spent


def _garden(rng: random.Random) -> tuple[str, list[str], int]:
    length, width = rng.randint(4, 20), rng.randint(3, 15)
    area = length * width
    path = rng.randint(1, area - 1)
    question = (f"A rectangular garden is {length} metres long and {width} metres wide. A path covers {path} square "
                f"metres of it. How many square metres are left for planting?")
    steps = [f"The garden covers {length} * {width} = {area} square metres.",
             f"Without the path, {area} - {path} = {area - path} square metres are left."]
    return question, steps, area - path


def _ages(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(FIRST_NAMES)
    age, gap, years = rng.randint(4, 30), rng.randint(1, 15), rng.randint(2, 20)
    question = (f"{name} is {age} years old. {name}'s brother is {gap} years older. How old will the brother be "
                f"in {years} years?")
    steps = [f"The brother is {age} + {gap} = {age + gap} years old.",
             f"In {years} years he will be {age + gap} + {years} = {age + gap + years} years old."]
    return question, steps, age + gap + years


SCHEMAS = {"shopping_change": _shopping, "travel_distance": _travel, "equal_sharing": _sharing,
           "savings": _savings, "garden_area": _garden, "age_difference": _ages}


def math_problem(schema: str, rng: random.Random) -> dict:
    """One problem of ``schema``: ``prompt`` (question), ``completion`` (worked solution) and labels."""
    question, steps, answer = SCHEMAS[schema](rng)
    name = next((n for n in FIRST_NAMES if n in question), None)
    return {"prompt": f"Question: {question}\nAnswer:", "completion": " " + " ".join(steps) + f" The answer is {answer}.",
            "schema": schema, "language": "en", "person": name}


def math_problems(n: int, rng: random.Random) -> list[dict]:
    """``n`` problems, schemas cycled."""
    names = list(SCHEMAS)
    return [math_problem(names[i % len(names)], rng) for i in range(n)]
