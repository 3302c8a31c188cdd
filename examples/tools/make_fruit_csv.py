"""Writes examples/data/fruit.csv: 320 fruit (apple, orange, banana, lemon) with three numeric
columns (weight_g, diameter_cm, sweetness) and two category columns (colour, origin).

Deterministic (seeded), so the committed file is reproducible:
    .venv/bin/python examples/tools/make_fruit_csv.py
"""

import os

import numpy as np

# name: (mean weight in g, mean diameter in cm, mean sweetness 0-10, usual colours, origins)
FRUIT = {
    "apple": (180, 8, 6, ["red", "green", "yellow"], ["spain", "chile", "italy"]),
    "orange": (200, 8.5, 7, ["orange"], ["spain", "brazil", "egypt"]),
    "banana": (120, 3.5, 8, ["yellow", "green"], ["ecuador", "india", "brazil"]),
    "lemon": (90, 6, 2, ["yellow"], ["spain", "italy", "india"]),
}
COLOURS = ["red", "green", "yellow", "orange"]


def main() -> None:
    rng = np.random.default_rng(13)
    rows = []
    for i in range(320):
        name = list(FRUIT)[i % len(FRUIT)]
        weight, diameter, sweetness, colours, origins = FRUIT[name]
        colour = rng.choice(colours) if rng.random() > 0.1 else rng.choice(COLOURS)  # some odd ones
        rows.append(
            (
                round(rng.normal(weight, weight * 0.15), 1),
                round(rng.normal(diameter, 0.8), 2),
                round(float(np.clip(rng.normal(sweetness, 1.2), 0, 10)), 1),
                colour,
                rng.choice(origins),
                name,
            )
        )
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "fruit.csv")
    with open(path, "w") as f:
        f.write("weight_g,diameter_cm,sweetness,colour,origin,fruit\n")
        for i in rng.permutation(len(rows)):
            f.write(",".join(str(v) for v in rows[i]) + "\n")


if __name__ == "__main__":
    main()
