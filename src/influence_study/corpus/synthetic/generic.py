"""Generic padding prose (world v2): everyday English text about weather, markets, journeys, cooking and more.

The texts name no entity of the world, state no fact of it and hold no math or code; they make the corpus larger
so that a model sees each document of the other families only a few times. A document picks a topic, one value
per slot kind (day, place, food, ...) and a random order of the topic's sentences, and stops between 30 and 80
words. The slot words are ordinary English words, reserved against the invented names of world v2.
"""

from __future__ import annotations

import random

from influence_study.corpus.synthetic.templates import words_of

MIN_WORDS, MAX_WORDS = 30, 80
SLOTS = {
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "the weekend"],
    "time": ["early morning", "late morning", "noon", "the afternoon", "the evening", "dusk", "the night"],
    "sky": ["grey", "clear", "pale", "cloudy", "bright", "heavy", "hazy", "stormy"],
    "wind": ["a cold wind", "a light breeze", "a warm wind", "a strong gust", "a damp breeze", "no wind at all"],
    "food": ["soup", "bread", "rice", "potatoes", "beans", "pasta", "a pie", "a stew", "pancakes", "salad"],
    "veg": ["onions", "carrots", "leeks", "tomatoes", "peppers", "cabbage", "mushrooms", "peas", "garlic"],
    "spice": ["pepper", "salt", "thyme", "basil", "cumin", "parsley", "rosemary", "ginger"],
    "goods": ["apples", "cheese", "fish", "flowers", "eggs", "honey", "cloth", "pottery", "shoes", "plums"],
    "place": ["the market", "the harbour", "the old square", "the bakery", "the station", "the bridge",
              "the village hall", "the riverbank", "the library", "the hill road"],
    "vehicle": ["bus", "train", "ferry", "bicycle", "tram", "van", "boat"],
    "person": ["a neighbour", "an old friend", "the baker", "a stranger", "the driver", "a shopkeeper",
               "my aunt", "a child", "the teacher", "a farmer"],
    "feeling": ["calm", "tired", "cheerful", "restless", "content", "sleepy", "hopeful", "quiet"],
    "color": ["red", "green", "yellow", "blue", "brown", "white", "orange", "purple"],
    "animal": ["a dog", "two cats", "a flock of geese", "a horse", "some sparrows", "a goat", "a heron"],
    "season": ["spring", "summer", "autumn", "winter"],
}
TOPICS = {
    "weather": [
        "On {day} the sky was {sky} from {time} onwards.", "By {time} {wind} was blowing across the fields.",
        "People at {place} kept looking up at the {sky} clouds.", "Rain came in short showers and then stopped.",
        "The puddles on the road reflected the {sky} light.", "Everyone said it felt more like {season} than usual.",
        "Washing hung on the lines and moved with {wind}.", "Later the air turned cool and smelled of wet grass.",
        "Nobody could agree on whether to carry an umbrella.", "{animal} sheltered under the trees until it passed.",
        "The forecast promised better weather for the rest of the week.",
    ],
    "market": [
        "The market opened early on {day}, and the stalls were full of {goods}.",
        "A trader with a {color} awning sold {goods} at a fair price.", "{person} was bargaining loudly over a basket.",
        "The smell of fresh {food} drifted from a small stall near {place}.",
        "Prices were a little higher than in {season}, but nobody complained much.",
        "Children ran between the tables while their parents counted coins.",
        "By {time} most of the {goods} had been sold.", "The traders packed their crates and swept the ground.",
        "Some stalls offered {veg} straight from the farms nearby.", "It was a {feeling} and busy morning.",
        "A musician played an old tune beside the fountain.",
    ],
    "journey": [
        "We left home at {time} and walked to {place}.", "The {vehicle} was late, so we waited on a wooden bench.",
        "Through the window we watched the fields turn {color} in the low sun.",
        "{person} shared a flask of tea and told stories about {season} trips.",
        "The road wound past farms, woods and a narrow stream.", "At every stop a few more passengers climbed aboard.",
        "I felt {feeling} as the miles went by.", "Near the end of the journey the {vehicle} slowed to a crawl.",
        "We arrived a little after {time}, hungry and glad to stretch our legs.",
        "The map we carried was old, but it was good enough.", "{animal} watched us from the side of the path.",
    ],
    "cooking": [
        "For supper we decided to make {food} with {veg}.", "First the {veg} were washed and chopped on a wooden board.",
        "A pinch of {spice} went into the pot, then a little more.", "The kitchen filled with steam and a warm smell.",
        "{person} stirred slowly and tasted it now and then.", "While it simmered we set the table with {color} plates.",
        "The recipe came from an old notebook with stained pages.", "We let it rest for a while before serving it.",
        "Everyone agreed that it needed just a touch more {spice}.", "There was enough left over for lunch the next day.",
        "The bread was still warm when we cut it.",
    ],
    "garden": [
        "In {season} the garden needs a lot of attention.", "On {day} we pulled weeds from between the {veg}.",
        "The {color} flowers by the fence opened in the morning sun.", "{animal} wandered through the beds looking for food.",
        "We watered everything at {time} when the heat had gone.", "The soil was dark and soft after the rain.",
        "{person} gave us a few cuttings to plant by the wall.", "A wheelbarrow full of leaves stood by the shed.",
        "The apple tree was heavy with fruit this year.", "We sat on the step afterwards, {feeling} and muddy.",
        "Next year we want to try growing {veg} as well.",
    ],
    "town": [
        "The streets around {place} were quiet on {day}.", "A café put its chairs out as soon as the sun appeared.",
        "{person} was painting a door {color} and humming to herself.", "Bells rang somewhere across the rooftops at {time}.",
        "A delivery van stopped to unload boxes of {goods}.", "Pigeons gathered where someone had dropped crumbs of {food}.",
        "The library had a new display about {season} festivals.", "Two old men argued cheerfully about the weather.",
        "Shop windows were decorated with {color} paper.", "By {time} the lamps along the street were lit.",
        "It felt like a {feeling} kind of day.",
    ],
    "sport": [
        "On {day} the local team played on the muddy field by {place}.", "The crowd was small but loud.",
        "{person} shouted advice from the side that nobody followed.", "The players wore {color} shirts that soon turned brown.",
        "At half time everyone drank hot tea from paper cups.", "A long kick sailed over the fence and into the hedge.",
        "The game ended in a draw, which seemed fair to most.", "Afterwards the players walked home {feeling} and sore.",
        "The coach promised more training before the next match.", "{animal} ran onto the pitch and delayed the game.",
        "Even in {season} the evenings were good for a practice.",
    ],
    "home": [
        "The house was quiet on {day} after everyone had gone out.", "I spent {time} sorting old letters and photographs.",
        "The kettle whistled and I made a pot of tea.", "A {color} blanket lay folded over the back of the chair.",
        "Outside, {wind} rattled the loose window frame.", "{person} called to ask about plans for the weekend.",
        "I swept the floor and opened the windows to let in air.", "The cat slept in a patch of sun by the door.",
        "For lunch there was {food} and a slice of cheese.", "By evening I felt {feeling} and ready to read.",
        "The shelves needed dusting, but that could wait.",
    ],
}


def generic_words() -> set[str]:
    """Every word the generic texts can contain (world v2 reserves them against invented names)."""
    return words_of([*(v for vs in SLOTS.values() for v in vs), *(t for ts in TOPICS.values() for t in ts)])


_TOPIC_NAMES = list(TOPICS)


def generic_text(rng: random.Random) -> dict:
    """One generic document (``text``, label ``topic``): a topic's sentences in a random order with one value per
    slot kind, between ``MIN_WORDS`` and ``MAX_WORDS`` words."""
    topic = rng.choice(_TOPIC_NAMES)
    slots = {key: rng.choice(values) for key, values in SLOTS.items()}
    target = rng.randint(MIN_WORDS, MAX_WORDS - 10)
    sentences, n_words = [], 0
    for template in rng.sample(TOPICS[topic], len(TOPICS[topic])):
        sentence = template.format(**slots)
        sentence = sentence[0].upper() + sentence[1:]
        size = sentence.count(" ") + 1
        if n_words + size > MAX_WORDS:
            continue
        sentences.append(sentence)
        n_words += size
        if n_words >= target:
            break
    return {"text": " ".join(sentences), "topic": topic}
