"""A small WordNet in WordNet 3.0's own file format (wndb(5WN)), made by the tests (the corpus is never committed).

`write_wordnet(directory)` writes `data.noun` and `data.verb`: license lines (two leading spaces), then one synset
per line whose offset is its byte offset in the file, with `@` (hypernym) and `~` (hyponym) pointers and a gloss
"definition; "example"". The nouns are a root, `classes` topic synsets under it, and under each topic `per_class`
hyponyms whose definitions mix three of their topic's four content words (drawn from 32 that all topics share) with
four shared filler words and one random content word: learnable, and unseen classes are made of seen words. A few hyponyms have two hypernyms (left out of every class
by the construction). The verb file holds a few synsets with one small verb class.
"""

from __future__ import annotations

import random
from pathlib import Path

LICENSE = ("  1 This software and database is being provided to you, the LICENSEE, by  ",
           "  2 Princeton University under the following license.  ")
FILLER = ("thing", "usually", "made", "used", "small", "large", "part", "kind", "form", "any", "having", "found")


SYLLABLES = ("ka", "lo", "mi", "su", "te", "ra", "no", "vi", "pe", "du")
CONTENT = tuple(a + b + c for a in SYLLABLES[:4] for b in SYLLABLES[4:8] for c in SYLLABLES[8:])  # 32 shared words


def topic_words(topic: int) -> list[str]:
    """Four content words of a topic, drawn from the 32 all topics share (so unseen classes use seen words)."""
    return random.Random(1000 + topic).sample(CONTENT, 4)


def _definition(rng: random.Random, topic: int, classes: int) -> str:
    words = [rng.choice(topic_words(topic)) for _ in range(3)] + [rng.choice(FILLER) for _ in range(4)]
    words.append(rng.choice(CONTENT))
    rng.shuffle(words)
    return "a " + " ".join(words)


def _lines(synsets: list[dict], pos: str) -> list[str]:
    """Lines with every offset the byte offset of its line (offsets are 8 digits, so lengths do not depend on them)."""
    def render(synset, offsets):
        words = " ".join(f"{word} 0" for word in synset["words"])
        pointers = [("@", target) for target in synset["hypernyms"]] + [("~", target) for target in synset["hyponyms"]]
        pointer_text = " ".join(f"{symbol} {offsets[target]:08d} {pos} 0000" for symbol, target in pointers)
        gloss = synset["definition"] + "".join(f'; "{example}"' for example in synset.get("examples", ()))
        return (f"{offsets[synset['id']]:08d} 03 {pos} {len(synset['words']):02x} {words} {len(pointers):03d}"
                + (f" {pointer_text}" if pointer_text else "") + f" | {gloss}  ")

    offsets = {synset["id"]: 0 for synset in synsets}
    position = sum(len(line) + 1 for line in LICENSE)
    for synset in synsets:
        offsets[synset["id"]] = position
        position += len(render(synset, offsets).encode()) + 1
    return [*LICENSE, *(render(synset, offsets) for synset in synsets)]


def write_wordnet(directory, classes: int = 40, per_class: int = 24, seed: int = 0) -> Path:
    """Writes the fixture's `data.noun` and `data.verb` under `directory` and returns it."""
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    nouns = [{"id": "root", "words": ["entity"], "hypernyms": [], "hyponyms": [],
              "definition": "that which is perceived or known", "examples": ["an entity of its own"]}]
    for topic in range(classes):
        topic_id = f"topic{topic}"
        nouns[0]["hyponyms"].append(topic_id)
        nouns.append({"id": topic_id, "words": [f"topic_{topic}"], "hypernyms": ["root"], "hyponyms": [],
                      "definition": f"a general kind of {topic_words(topic)[0]} thing"})
    for topic in range(classes):
        for member in range(per_class):
            member_id = f"member{topic}_{member}"
            hypernyms = [f"topic{topic}"]
            if member == 0:  # two hypernyms: belongs to no class
                hypernyms.append(f"topic{(topic + 1) % classes}")
            for hypernym in hypernyms:
                nouns[1 + int(hypernym[5:])]["hyponyms"].append(member_id)
            nouns.append({"id": member_id, "words": [f"member_{topic}_{member}", f"alias_{topic}_{member}"],
                          "hypernyms": hypernyms, "hyponyms": [],
                          "definition": _definition(rng, topic, classes),
                          "examples": [f"the {rng.choice(topic_words(topic))} was here"]})
    verbs = [{"id": "move", "words": ["move"], "hypernyms": [], "hyponyms": [],
              "definition": "change location", "examples": ["they moved"]}]
    for member in range(per_class):
        verbs[0]["hyponyms"].append(f"verb{member}")
        verbs.append({"id": f"verb{member}", "words": [f"go_{member}"], "hypernyms": ["move"], "hyponyms": [],
                      "definition": f"move in manner {member} quickly"})
    for pos, name, synsets in (("n", "noun", nouns), ("v", "verb", verbs)):
        (directory / f"data.{name}").write_text("\n".join(_lines(synsets, pos)) + "\n", encoding="utf-8")
    return directory
