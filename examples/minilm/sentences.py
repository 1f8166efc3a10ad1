"""Varied English sentences for MiniLM's calibration and evaluation, generated offline from templates.

Why generated: the example must run without a network or a data set download, yet quantization error
shows on varied text (short questions, long clauses, numbers, rare words), not on one repeated pattern.
Why two template pools: evaluation draws half of its sentences from templates calibration never sees,
so "held out" means unseen sentence shapes, not only unseen word choices. The two sets never share a
sentence (`split` removes any collision), which `tests/optimizer/text` checks.

    python examples/minilm/sentences.py DIR   # writes DIR/calibration.txt and DIR/evaluation.txt

The example's own data/ is committed (48 KB), so `slimserve optimize examples/minilm/model.yaml` runs from a
clean clone; `tests/optimizer/text/test_example.py` checks it is exactly what this script writes.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

WORDS = {
    "name": ["Maria", "Kenji", "Aisha", "Tom", "Priya", "Lukas", "Sofia", "Omar", "Chen", "Grace", "the manager", "my neighbour"],
    "place": [
        "Lisbon",
        "the mountains",
        "a small village",
        "the harbour",
        "Nairobi",
        "the office",
        "the old library",
        "a crowded station",
        "Montreal",
        "the desert",
        "the city centre",
        "an island in the north",
    ],
    "thing": [
        "the report",
        "a new laptop",
        "the blue bicycle",
        "this recipe",
        "the quarterly budget",
        "an old camera",
        "the vaccine trial",
        "the database migration",
        "a second-hand piano",
        "the football match",
        "the contract",
        "the solar panels",
        "a cup of green tea",
        "the train timetable",
        "the pull request",
    ],
    "adj": [
        "quick",
        "expensive",
        "surprisingly good",
        "broken",
        "reliable",
        "confusing",
        "beautiful",
        "noisy",
        "delicious",
        "outdated",
        "efficient",
        "fragile",
        "uncomfortable",
        "brilliant",
    ],
    "verb": [
        "bought",
        "fixed",
        "reviewed",
        "cancelled",
        "painted",
        "delivered",
        "rewrote",
        "tested",
        "sold",
        "borrowed",
        "recommended",
        "ignored",
        "translated",
        "measured",
    ],
    "feeling": ["happy", "worried", "tired", "excited", "annoyed", "relieved", "curious", "disappointed", "proud"],
    "time": [
        "yesterday",
        "last week",
        "this morning",
        "in 2019",
        "after lunch",
        "on Friday night",
        "two hours ago",
        "before the storm",
        "every winter",
        "at 7:30",
    ],
    "topic": [
        "climate change",
        "machine learning",
        "interest rates",
        "the election",
        "renewable energy",
        "quantum computing",
        "public transport",
        "remote work",
        "ocean pollution",
        "vaccines",
        "cryptocurrency",
        "urban gardening",
    ],
    "number": ["3", "twelve", "42", "1,500", "99.9%", "a dozen", "hundreds of", "0.5", "seven", "2,048"],
    "food": ["pasta", "lentil soup", "sushi", "a chocolate cake", "grilled vegetables", "fresh bread", "spicy curry", "pancakes"],
    "sport": ["tennis", "chess", "basketball", "marathon running", "rock climbing", "swimming", "cricket"],
}

SHARED = [
    "{name} {verb} {thing} {time}.",
    "Is {thing} really as {adj} as people say?",
    "We travelled to {place} {time} and the weather was awful.",
    "I feel {feeling} because {thing} turned out to be {adj}.",
    "The article about {topic} was long but {adj}.",
    "How many people live in {place}?",
    "{name} cooked {food} for {number} guests {time}.",
    "Please send me {thing} before the meeting.",
    "Experts disagree about the long-term effects of {topic}.",
    "My favourite sport is {sport}, although I am not very good at it.",
    "After {number} attempts, {name} finally {verb} {thing}.",
    "The price of {thing} rose by {number} {time}.",
    "Why did {name} say that {thing} was {adj}?",
    "Honestly, {food} in {place} is {adj}.",
]

HELD_OUT = [
    "Nobody expected {name} to be so {feeling} about {topic}.",
    "When the power went out in {place}, {name} {verb} {thing} by candlelight, which was {adj} but strangely calming.",
    "Can you recommend a {adj} place for {food} near {place}?",
    "{topic} is not something {name} talks about at dinner.",
    "The team {verb} {thing} {time}; the results were {adj}.",
    "Do not forget to bring {thing} to {place}.",
    "I have played {sport} since I was {number}, and I still lose to {name}.",
    "According to the survey, {number} residents of {place} care about {topic}.",
    "What a {adj} day!",
    '{name}: "I {verb} {thing}, so stop asking."',
]


def _fill(template: str, rng: random.Random) -> str:
    text = template.format(**{key: rng.choice(values) for key, values in WORDS.items()})
    return text[0].upper() + text[1:]


def generate(count: int, templates: list[str], seed: int) -> list[str]:
    """`count` distinct sentences; distinct because duplicates would weigh some shapes twice."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[_fill(rng.choice(templates), rng)] = None
    return list(seen)


def split(calibration: int = 256, evaluation: int = 512) -> tuple[list[str], list[str]]:
    calib = generate(calibration, SHARED, seed=1)
    known = set(calib)
    held = [s for s in generate(evaluation // 2 + len(known), SHARED, seed=2) if s not in known][: evaluation // 2]
    return calib, held + generate(evaluation - len(held), HELD_OUT, seed=3)


def write(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    calib, evaluation = split()
    paths = folder / "calibration.txt", folder / "evaluation.txt"
    for path, lines in zip(paths, (calib, evaluation)):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"):
        print(path)
