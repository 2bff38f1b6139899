"""The generated fine-tuning tasks of the DataInf part of the study (Kwon et al. 2023, PAPER.md section 2).

Every example is a prompt/completion pair (the loss is on the completion only) with ground truth:

- ``noisy_sentiment``: a two-class text classification ("Review: ...\\nThumbs:" -> " up" / " down")
  in which a share of the TRAINING labels is flipped (``flipped`` says which; test labels are clean);
- ``sentence_transform``: ten word-level transformations of generated sentences, the instruction in the prompt;
- ``math_no_reason``: ten math word-problem schemas, the completion is the bare answer;
- ``math_with_reason``: the same ten schemas, the completion is the worked solution and the answer.

The three generation tasks have ``classes`` classes with ``per_class`` examples each, of which ``test_per_class``
are test examples (the paper: 10 classes x 100 examples, 90 train / 10 test per class). ``generate_tasks``
returns one table with columns :data:`COLUMNS`.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping

import pandas as pd

from influence_study.corpus.synthetic import math_problems
from influence_study.corpus.synthetic.math_problems import FIRST_NAMES, ITEMS
# Defined beside the config check that needs it (the config must not import this module); re-exported here.
from influence_study.study.seeds import finetune_task_seed

TASKS = ("noisy_sentiment", "sentence_transform", "math_no_reason", "math_with_reason")
COLUMNS = ["task", "split", "example_id", "class", "prompt", "completion", "flipped", "clean_completion"]

# --- noisy_sentiment -------------------------------------------------------------------------------------------
POSITIVE = ["wonderful", "excellent", "delightful", "superb", "charming", "brilliant", "pleasant", "lovely"]
NEGATIVE = ["terrible", "awful", "dreadful", "boring", "clumsy", "dull", "miserable", "horrible"]
SUBJECTS = ["film", "meal", "hotel", "concert", "book", "service", "journey", "museum", "game", "show"]
PARTS = ["story", "music", "staff", "food", "ending", "room", "price", "view", "start", "cast"]
LABELS = {"positive": POSITIVE, "negative": NEGATIVE}
# The answer words (one token each in the study's tokenizer, so the label is one prediction).
ANSWERS = {"positive": " up", "negative": " down"}


def _review(label: str, rng: random.Random) -> str:
    first, second = rng.sample(LABELS[label], 2)
    part = rng.choice(PARTS)
    return f"Review: the {rng.choice(SUBJECTS)} was {first} and the {part} was {second}.\nThumbs:"


# --- sentence_transform ----------------------------------------------------------------------------------------
ADJECTIVES = ["old", "young", "quiet", "busy", "tall", "small", "brave", "tired", "happy", "clever"]
AGENTS = ["farmer", "teacher", "sailor", "baker", "doctor", "painter", "child", "driver", "singer", "guard"]
VERBS = ["carries", "finds", "paints", "sells", "cleans", "repairs", "follows", "watches", "opens", "builds"]
OBJECTS = ["basket", "boat", "window", "garden", "letter", "bridge", "lamp", "table", "wagon", "fence"]
PLACES = ["market", "harbour", "school", "village", "station", "river", "forest", "castle", "library", "farm"]


def _sentence(rng: random.Random) -> list[str]:
    return ["the", rng.choice(ADJECTIVES), rng.choice(AGENTS), rng.choice(VERBS), "a", rng.choice(ADJECTIVES),
            rng.choice(OBJECTS), "near", "the", rng.choice(PLACES)]


TRANSFORMS: dict[str, tuple[str, Callable[[list[str]], str]]] = {
    "reverse_words": ("Reverse the order of the words:", lambda w: " ".join(reversed(w))),
    "capitals": ("Write the sentence in capital letters:", lambda w: " ".join(w).upper()),
    "first_letters": ("Write the first letter of every word:", lambda w: " ".join(x[0] for x in w)),
    "sort_words": ("Sort the words alphabetically:", lambda w: " ".join(sorted(w))),
    "double_words": ("Repeat every word twice:", lambda w: " ".join(x for x in w for _ in (0, 1))),
    "every_other": ("Keep every other word:", lambda w: " ".join(w[::2])),
    "last_first": ("Move the last word to the front:", lambda w: " ".join([w[-1], *w[:-1]])),
    "drop_ends": ("Remove the first and the last word:", lambda w: " ".join(w[1:-1])),
    "count_words": ("Count the words:", lambda w: str(len(w))),
    "join_dashes": ("Join the words with dashes:", lambda w: "-".join(w)),
}


def _transform(name: str, rng: random.Random) -> tuple[str, str]:
    instruction, apply = TRANSFORMS[name]
    words = _sentence(rng)
    if name == "count_words":  # vary the length so that the answer is not constant
        words = words[:rng.randint(4, len(words))]
    return f"{instruction} {' '.join(words)}\nOutput:", " " + apply(words)


# --- math (ten schemas: the six of the corpus and four more in the same form) --------------------------------
def _baking(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(FIRST_NAMES)
    trays, per_tray, eaten = rng.randint(2, 6), rng.randint(6, 14), rng.randint(1, 5)
    baked = trays * per_tray
    question = (f"{name} bakes {trays} trays of cookies with {per_tray} cookies on each tray and eats {eaten} of "
                f"them. How many cookies are left?")
    steps = [f"{name} bakes {trays} * {per_tray} = {baked} cookies.", f"{baked} - {eaten} = {baked - eaten} are left."]
    return question, steps, baked - eaten


def _reading(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(FIRST_NAMES)
    per_day, days = rng.randint(5, 30), rng.randint(2, 9)
    read = per_day * days
    pages = read + rng.randint(10, 200)
    question = (f"A book has {pages} pages. {name} reads {per_day} pages a day for {days} days. How many pages "
                f"are still unread?")
    steps = [f"{name} reads {per_day} * {days} = {read} pages.", f"{pages} - {read} = {pages - read} pages are unread."]
    return question, steps, pages - read


def _fence(rng: random.Random) -> tuple[str, list[str], int]:
    length, width = rng.randint(3, 30), rng.randint(2, 20)
    half = length + width
    question = (f"A field is {length} metres long and {width} metres wide. How many metres of fence go around "
                f"it?")
    steps = [f"Length and width add up to {length} + {width} = {half} metres.",
             f"The fence is 2 * {half} = {2 * half} metres long."]
    return question, steps, 2 * half


def _two_items(rng: random.Random) -> tuple[str, list[str], int]:
    name, item, other = rng.choice(FIRST_NAMES), *rng.sample(ITEMS, 2)
    n, price, m, price2 = rng.randint(2, 8), rng.randint(2, 9), rng.randint(2, 8), rng.randint(2, 9)
    first, second = n * price, m * price2
    question = (f"{name} buys {n} {item} at {price} dollars each and {m} {other} at {price2} dollars each. How "
                f"much does {name} spend?")
    steps = [f"The {item} cost {n} * {price} = {first} dollars.", f"The {other} cost {m} * {price2} = {second} dollars.",
             f"Together {first} + {second} = {first + second} dollars."]
    return question, steps, first + second


MATH_SCHEMAS: dict[str, Callable[[random.Random], tuple[str, list[str], int]]] = {
    **math_problems.SCHEMAS, "baking": _baking, "reading": _reading, "fence": _fence, "two_items": _two_items}


def _math(schema: str, with_reason: bool, rng: random.Random) -> tuple[str, str]:
    question, steps, answer = MATH_SCHEMAS[schema](rng)
    completion = " ".join(steps) + f" The answer is {answer}." if with_reason else str(answer)
    return f"Question: {question}\nAnswer:", " " + completion


# --- tables ----------------------------------------------------------------------------------------------------
def _class_task(task: str, classes: list[str], make: Callable[[str, random.Random], tuple[str, str]],
                per_class: int, test_per_class: int, rng: random.Random) -> list[dict]:
    rows = []
    for name in classes:
        seen: set[str] = set()
        examples = []
        for _ in range(100 * per_class):  # distinct prompts; the vocabularies allow far more than needed
            prompt, completion = make(name, rng)
            if prompt not in seen:
                seen.add(prompt)
                examples.append((prompt, completion))
            if len(examples) == per_class:
                break
        else:
            raise ValueError(f"{task}: could not draw {per_class} distinct examples of class {name!r}")
        for i, (prompt, completion) in enumerate(examples):
            split = "test" if i < test_per_class else "train"
            rows.append(dict(task=task, split=split, **{"class": name}, prompt=prompt, completion=completion,
                             flipped=False, clean_completion=completion))
    return rows


def _sentiment(n_train: int, n_test: int, flip_fraction: float, rng: random.Random) -> list[dict]:
    labels = list(LABELS)
    rows = []
    for split, n in (("test", n_test), ("train", n_train)):
        for i in range(n):
            label = labels[i % 2]
            rows.append(dict(task="noisy_sentiment", split=split, **{"class": label}, prompt=_review(label, rng),
                             completion=ANSWERS[label], flipped=False, clean_completion=ANSWERS[label]))
    train = [r for r in rows if r["split"] == "train"]
    for row in rng.sample(train, round(flip_fraction * len(train))):
        other = next(x for x in labels if x != row["class"])
        row["completion"], row["flipped"] = ANSWERS[other], True
    return rows


def _check_classes(task: str, settings: Mapping, available: int) -> int:
    classes, per_class, test = settings["classes"], settings["per_class"], settings["test_per_class"]
    if not 1 <= classes <= available:
        raise ValueError(f"finetune.tasks.{task}.classes: expected 1..{available}, got {classes}")
    if not 0 < test < per_class:
        raise ValueError(f"finetune.tasks.{task}: test_per_class ({test}) must be between 1 and per_class - 1 "
                         f"({per_class - 1})")
    return classes


def generate_tasks(settings: Mapping, seed: int) -> pd.DataFrame:
    """The fine-tuning examples of the tasks in ``settings`` (the validated ``finetune.tasks`` section; a task
    that is absent is not generated), seeded by ``seed``; one row per example, test rows first within a class.

    Task ``j`` of :data:`TASKS` draws from ``random.Random(finetune_task_seed(seed, j))``, whether or not the
    tasks before it are generated. :func:`influence_study.study.config.finetune_train_size` says how many training examples a task gets."""
    unknown = sorted(set(settings) - set(TASKS))
    if unknown:
        raise ValueError(f"finetune.tasks: unknown task(s) {unknown}; expected some of {', '.join(TASKS)}")
    rows: list[dict] = []
    for offset, task in enumerate(TASKS):
        if task not in settings:
            continue
        section = settings[task]
        rng = random.Random(finetune_task_seed(seed, offset))
        if task == "noisy_sentiment":
            if not 0 <= section["flip_fraction"] < 0.5:
                raise ValueError(f"finetune.tasks.noisy_sentiment.flip_fraction: expected [0, 0.5), "
                                 f"got {section['flip_fraction']}")
            rows += _sentiment(section["n_train"], section["n_test"], section["flip_fraction"], rng)
        elif task == "sentence_transform":
            classes = list(TRANSFORMS)[:_check_classes(task, section, len(TRANSFORMS))]
            rows += _class_task(task, classes, _transform, section["per_class"], section["test_per_class"], rng)
        else:
            classes = list(MATH_SCHEMAS)[:_check_classes(task, section, len(MATH_SCHEMAS))]
            with_reason = task == "math_with_reason"
            rows += _class_task(task, classes, lambda s, r: _math(s, with_reason, r), section["per_class"],
                                section["test_per_class"], rng)
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "example_id"])
    table.insert(2, "example_id", [f"{t}-{s}-{i:04d}" for i, (t, s) in
                                   enumerate(zip(table["task"], table["split"]))])
    return table[COLUMNS]
