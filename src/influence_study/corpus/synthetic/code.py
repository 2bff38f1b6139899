"""Small Python functions from algorithm schemas, with descriptive or obfuscated identifiers.

A schema is a function body with placeholders for its identifiers (``{fn}``, ``{a}``, ``{b}``, ``{i}``, ``{r}``);
each placeholder has a pool of descriptive names, and obfuscation replaces them with short random identifiers.
World v1 writes every schema in one style (``SCHEMAS``); world v2 draws one of the styles in ``STYLES`` (style 0 is
v1's), which differ in loop form and in their pools of descriptive names, so that functions of one schema do not
all share the query's surface words.
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
# Second styles: another loop form and other descriptive names (the example call is the schema's).
_POS = ["pos", "cursor", "n", "j"]
_SEQ = ["seq", "elements", "entries", "row"]
_TEXT = ["s", "chars", "source", "sentence"]
ALTERNATIVE_STYLES = {
    "linear_search": CodeSchema(
        "Give the position of the target in the list, or -1 when it is missing.", "{fn}({a}, {b})",
        "    {i} = 0\n    while {i} < len({a}):\n        if {a}[{i}] == {b}:\n            return {i}\n        {i} += 1\n"
        "    return -1\n",
        {"fn": ["position_of", "locate", "find_position", "where_is"], "a": _SEQ, "b": ["goal", "sought", "query", "x"],
         "i": _POS}, "[{x}, {y}, {z}], {y}"),
    "bubble_sort": CodeSchema(
        "Sort the list by swapping neighbours until nothing changes.", "{fn}({a})",
        "    {r} = True\n    while {r}:\n        {r} = False\n        for {i} in range(1, len({a})):\n"
        "            if {a}[{i} - 1] > {a}[{i}]:\n                {a}[{i} - 1], {a}[{i}] = {a}[{i}], {a}[{i} - 1]\n"
        "                {r} = True\n    return {a}\n",
        {"fn": ["bubble_sorted", "sort_by_swaps", "swap_sort", "order_list"], "a": _SEQ,
         "r": ["swapped", "changed", "dirty", "again"], "i": _POS}, "[{z}, {x}, {y}]"),
    "sum_list": CodeSchema(
        "Return the sum of the list, element by element.", "{fn}({a})",
        "    {r} = 0\n    for {i} in range(len({a})):\n        {r} += {a}[{i}]\n    return {r}\n",
        {"fn": ["sum_of", "list_total", "add_up", "sum_values"], "a": _SEQ, "i": _POS,
         "r": ["sum_so_far", "subtotal", "tally", "acc_sum"]}, "[{x}, {y}, {z}]"),
    "max_value": CodeSchema(
        "Find the greatest element, or None for an empty list.", "{fn}({a})",
        "    {r} = None\n    for {b} in {a}:\n        if {r} is None or {b} > {r}:\n            {r} = {b}\n"
        "    return {r}\n",
        {"fn": ["maximum", "max_of", "highest", "greatest"], "a": _SEQ, "b": ["x", "entry", "element", "mark"],
         "r": ["champion", "highest_seen", "peak", "record"]}, "[{x}, {z}, {y}]"),
    "count_matches": CodeSchema(
        "Return how many positions of the list hold the target.", "{fn}({a}, {b})",
        "    {r} = 0\n    for {i} in range(len({a})):\n        if {a}[{i}] == {b}:\n            {r} = {r} + 1\n"
        "    return {r}\n",
        {"fn": ["tally_of", "how_many", "count_hits", "number_equal"], "a": _SEQ, "b": ["goal", "sought", "query", "x"],
         "i": _POS, "r": ["tally", "total_found", "n_equal", "seen"]}, "[{x}, {y}, {x}], {x}"),
    "reverse_string": CodeSchema(
        "Build the reversed copy of the string from its last character.", "{fn}({a})",
        "    {r} = []\n    for {i} in range(len({a}) - 1, -1, -1):\n        {r}.append({a}[{i}])\n"
        "    return ''.join({r})\n",
        {"fn": ["reverse_text", "mirror", "reversed_copy", "backwards_text"], "a": _TEXT, "i": _POS,
         "r": ["pieces", "parts", "letters", "out"]}, "'{w}'"),
    "is_palindrome": CodeSchema(
        "Check each character of the first half against its mirror.", "{fn}({a})",
        "    for {i} in range(len({a}) // 2):\n        if {a}[{i}] != {a}[-1 - {i}]:\n            return False\n"
        "    return True\n",
        {"fn": ["palindromic", "is_mirror", "same_both_ways", "symmetric_text"], "a": _TEXT, "i": _POS},
        "'{w}'"),
    "factorial": CodeSchema(
        "Multiply n by every smaller positive number.", "{fn}({a})",
        "    {r} = 1\n    while {a} > 1:\n        {r} *= {a}\n        {a} -= 1\n    return {r}\n",
        {"fn": ["factorial_of", "fact_loop", "n_factorial", "prod_down"], "a": ["n", "k", "m", "top"],
         "r": ["answer", "total_product", "p", "out"]}, "{x}"),
}
STYLES = {schema: [spec, ALTERNATIVE_STYLES[schema]] for schema, spec in SCHEMAS.items()}
WORDS = ["level", "banana", "radar", "python", "stats", "window", "noon", "garden"]


def _obfuscated_names(placeholders: list[str], rng: random.Random) -> dict[str, str]:
    names: dict[str, str] = {}
    while len(names) < len(placeholders):
        candidate = rng.choice(string.ascii_lowercase) + "".join(
            rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(1, 2)))
        if not keyword.iskeyword(candidate) and candidate not in names.values() and candidate not in dir(builtins):
            names[placeholders[len(names)]] = candidate
    return names


def code_function(schema: str, obfuscated: bool, rng: random.Random, style: int | None = None) -> dict:
    """One function of ``schema``: ``prompt`` (signature, docstring), ``completion`` (body) and an example call.
    ``style`` (world v2): an index into ``STYLES[schema]``, recorded with the labels ``style`` and ``identifiers``
    (the function's own names, separated by spaces); None: the v1 style, without those labels."""
    spec = STYLES[schema][style or 0]
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
    item = {"prompt": header, "completion": body, "schema": schema, "obfuscated": obfuscated, "language": "python"}
    return item if style is None else dict(item, style=style, identifiers=" ".join(names.values()))


def cycled_style(schema: str, k: int) -> int:
    """The style of the ``k``-th item when the schemas are cycled: each schema's styles in turn."""
    return (k // len(SCHEMAS)) % len(STYLES[schema])


def code_functions(n: int, obfuscated_fraction: float, rng: random.Random, styled: bool = False) -> list[dict]:
    """``n`` functions, schemas cycled, ``round(n * obfuscated_fraction)`` of them (at random) obfuscated;
    ``styled`` (world v2): each schema's styles cycled too."""
    schemas = list(SCHEMAS)
    n_obfuscated = round(n * obfuscated_fraction)
    flags = [True] * n_obfuscated + [False] * (n - n_obfuscated)
    rng.shuffle(flags)
    return [code_function(schemas[i % len(schemas)], flag, rng, cycled_style(schemas[i % len(schemas)], i) if styled
                          else None) for i, flag in enumerate(flags)]
