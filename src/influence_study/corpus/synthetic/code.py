"""Small Python functions from algorithm schemas, with descriptive or obfuscated identifiers.

A schema is a function body with placeholders for its identifiers (``{fn}``, ``{a}``, ``{b}``, ``{i}``, ``{r}``);
each placeholder has a pool of descriptive names, and obfuscation replaces them with short random identifiers.
"""

from __future__ import annotations

import builtins
import keyword
import random
import string
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeSchema:
    doc: str                      # one-line docstring (descriptive versions only)
    signature: str                # "{fn}({a}, {b})"
    body: str                     # indented with four spaces, may use every placeholder
    names: dict[str, list[str]]   # descriptive names per placeholder
    example: str                  # arguments of the example call after the function


SCHEMAS = {
    "linear_search": CodeSchema(
        "Return the index of the first element equal to the target, or -1.", "{fn}({a}, {b})",
        "    for {i} in range(len({a})):\n        if {a}[{i}] == {b}:\n            return {i}\n    return -1\n",
        {"fn": ["linear_search", "find_index", "index_of", "search_list"], "a": ["items", "values", "numbers", "data"],
         "b": ["target", "wanted", "key", "needle"], "i": ["index", "position", "i", "k"]},
        "[{x}, {y}, {z}], {y}"),
    "bubble_sort": CodeSchema(
        "Sort the list in place with bubble sort and return it.", "{fn}({a})",
        "    for {i} in range(len({a})):\n        for {b} in range(len({a}) - 1 - {i}):\n"
        "            if {a}[{b}] > {a}[{b} + 1]:\n                {a}[{b}], {a}[{b} + 1] = {a}[{b} + 1], {a}[{b}]\n"
        "    return {a}\n",
        {"fn": ["bubble_sort", "sort_values", "sort_in_place", "simple_sort"], "a": ["items", "values", "numbers", "array"],
         "i": ["step", "rounds", "i", "outer"], "b": ["j", "inner", "position", "idx"]},
        "[{z}, {x}, {y}]"),
    "sum_list": CodeSchema(
        "Add up all the numbers in the list.", "{fn}({a})",
        "    {r} = 0\n    for {b} in {a}:\n        {r} = {r} + {b}\n    return {r}\n",
        {"fn": ["sum_list", "total", "add_all", "accumulate"], "a": ["numbers", "values", "items", "amounts"],
         "b": ["number", "value", "item", "amount"], "r": ["total", "result", "acc", "running_sum"]},
        "[{x}, {y}, {z}]"),
    "max_value": CodeSchema(
        "Return the largest element of a non-empty list.", "{fn}({a})",
        "    {r} = {a}[0]\n    for {b} in {a}[1:]:\n        if {b} > {r}:\n            {r} = {b}\n    return {r}\n",
        {"fn": ["max_value", "largest", "find_max", "biggest"], "a": ["numbers", "values", "items", "scores"],
         "b": ["number", "value", "item", "score"], "r": ["best", "largest", "current_max", "top"]},
        "[{x}, {z}, {y}]"),
    "count_matches": CodeSchema(
        "Count how many elements of the list equal the target.", "{fn}({a}, {b})",
        "    {r} = 0\n    for {i} in {a}:\n        if {i} == {b}:\n            {r} += 1\n    return {r}\n",
        {"fn": ["count_matches", "count_equal", "occurrences", "count_of"], "a": ["items", "values", "words", "data"],
         "b": ["target", "wanted", "key", "value"], "i": ["item", "element", "entry", "candidate"],
         "r": ["count", "matches", "hits", "found"]},
        "[{x}, {y}, {x}], {x}"),
    "reverse_string": CodeSchema(
        "Return the string written backwards.", "{fn}({a})",
        "    {r} = ''\n    for {b} in {a}:\n        {r} = {b} + {r}\n    return {r}\n",
        {"fn": ["reverse_string", "reversed_text", "backwards", "flip_text"], "a": ["text", "word", "string", "line"],
         "b": ["char", "letter", "character", "symbol"], "r": ["result", "reversed_text", "output", "flipped"]},
        "'{w}'"),
    "is_palindrome": CodeSchema(
        "Return True if the string reads the same forwards and backwards.", "{fn}({a})",
        "    {i} = 0\n    {b} = len({a}) - 1\n    while {i} < {b}:\n        if {a}[{i}] != {a}[{b}]:\n"
        "            return False\n        {i} += 1\n        {b} -= 1\n    return True\n",
        {"fn": ["is_palindrome", "reads_same_backwards", "check_palindrome", "palindrome"],
         "a": ["text", "word", "string", "phrase"], "i": ["left", "start", "low", "front"],
         "b": ["right", "end", "high", "back"]},
        "'{w}'"),
    "factorial": CodeSchema(
        "Return n factorial, the product of 1 to n.", "{fn}({a})",
        "    {r} = 1\n    for {i} in range(2, {a} + 1):\n        {r} = {r} * {i}\n    return {r}\n",
        {"fn": ["factorial", "product_up_to", "fact", "compute_factorial"], "a": ["n", "number", "count", "limit"],
         "i": ["k", "factor", "i", "step"], "r": ["result", "product", "acc", "value"]},
        "{x}"),
}
WORDS = ["level", "banana", "radar", "python", "stats", "window", "noon", "garden"]


def _obfuscated_names(placeholders: list[str], rng: random.Random) -> dict[str, str]:
    names: dict[str, str] = {}
    while len(names) < len(placeholders):
        candidate = rng.choice(string.ascii_lowercase) + "".join(
            rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(1, 2)))
        if not keyword.iskeyword(candidate) and candidate not in names.values() and candidate not in dir(builtins):
            names[placeholders[len(names)]] = candidate
    return names


def code_function(schema: str, obfuscated: bool, rng: random.Random) -> dict:
    """One function of ``schema``: ``prompt`` (signature, docstring), ``completion`` (body) and an example call."""
    spec = SCHEMAS[schema]
    placeholders = list(spec.names)
    if obfuscated:
        names = _obfuscated_names(placeholders, rng)
    else:
        names = {}
        for key in placeholders:  # distinct descriptive names for distinct placeholders
            choices = [n for n in spec.names[key] if n not in names.values()]
            names[key] = rng.choice(choices)
    header = f"def {spec.signature.format(**names)}:\n"
    if not obfuscated:
        header += f'    """{spec.doc}"""\n'
    x, y, z = rng.sample(range(1, 20), 3)
    example = spec.example.format(x=x, y=y, z=z, w=rng.choice(WORDS))
    body = spec.body.format(**names) + f"\n\nresult = {names['fn']}({example})\n"
    return {"prompt": header, "completion": body, "schema": schema, "obfuscated": obfuscated, "language": "python"}


def code_functions(n: int, obfuscated_fraction: float, rng: random.Random) -> list[dict]:
    """``n`` functions, schemas cycled, ``round(n * obfuscated_fraction)`` of them (at random) obfuscated."""
    schemas = list(SCHEMAS)
    n_obfuscated = round(n * obfuscated_fraction)
    flags = [True] * n_obfuscated + [False] * (n - n_obfuscated)
    rng.shuffle(flags)
    return [code_function(schemas[i % len(schemas)], flag, rng) for i, flag in enumerate(flags)]
