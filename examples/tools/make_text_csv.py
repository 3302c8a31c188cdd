"""Writes examples/data/text.csv: short news-like sentences in three classes
(sports, technology, cooking), in pipcook's text format `text,category` with no header.

Deterministic (seeded), so the committed file is reproducible:
    .venv/bin/python examples/tools/make_text_csv.py
"""

import csv
import os
import random

PARTS = {
    "sports": (
        [
            "The striker",
            "Our goalkeeper",
            "The home team",
            "The coach",
            "A young sprinter",
            "The captain",
            "The referee",
            "Fans of the club",
            "The defending champion",
            "The rookie",
        ],
        [
            "scored twice in",
            "was injured during",
            "celebrated after",
            "trained hard before",
            "was sent off in",
            "won the trophy at",
            "lost narrowly in",
            "set a record in",
        ],
        [
            "the cup final",
            "the derby",
            "the league match",
            "the marathon",
            "the penalty shootout",
            "the second half",
            "the tournament",
            "the relay race",
            "extra time",
            "the away game",
        ],
    ),
    "technology": (
        [
            "The startup",
            "Engineers",
            "The new phone",
            "A security researcher",
            "The chip maker",
            "The app",
            "Developers",
            "The cloud provider",
            "The open source project",
            "The laptop",
        ],
        [
            "released an update to",
            "found a bug in",
            "announced support for",
            "shipped a faster version of",
            "open sourced",
            "patched a flaw in",
            "benchmarked",
            "rewrote",
        ],
        [
            "the operating system",
            "the database",
            "the compiler",
            "the browser",
            "the encryption library",
            "the battery firmware",
            "the network stack",
            "the machine learning model",
            "the API",
            "the kernel",
        ],
    ),
    "cooking": (
        [
            "The chef",
            "My grandmother",
            "The bakery",
            "A home cook",
            "The restaurant",
            "The pastry team",
            "The recipe",
            "Street vendors",
            "The food critic",
            "Students",
        ],
        ["slowly simmered", "baked", "seasoned", "grilled", "whisked", "roasted", "tasted", "served"],
        [
            "the tomato sauce",
            "fresh bread",
            "the garlic butter",
            "a chocolate cake",
            "the vegetable soup",
            "spicy noodles",
            "the roast chicken",
            "pancakes with honey",
            "the lemon tart",
            "a pot of rice",
        ],
    ),
}
TAILS = ["", " yesterday", " this morning", " again", " on Sunday", " for the first time", " last night"]


def main(path: str, per_class: int = 120, seed: int = 3) -> None:
    rng = random.Random(seed)
    rows = []
    for category, (subjects, verbs, objects) in PARTS.items():
        seen = set()
        while len(seen) < per_class:
            text = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(TAILS)}."
            if text not in seen:
                seen.add(text)
                rows.append((text, category))
    rng.shuffle(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


if __name__ == "__main__":
    main(os.path.join(os.path.dirname(__file__), "..", "data", "text.csv"))
