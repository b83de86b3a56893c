"""WordNet 3.0 as few-shot text classification: a reader of its own data files, and the class construction.

Nothing is downloaded: the files are Princeton's `data.noun` and `data.verb` (Debian: `apt-get install
wordnet-base`, under `/usr/share/wordnet`; or any directory given as `--data-dir` or `MSSL_TF_WORDNET_DIR`).

The construction (`hypernym_classes`), exactly:

1. Every synset of `data.noun` and `data.verb` is read with its hypernyms (`@` pointers) and its gloss. A gloss is
   "definition; "example"; ..."; the *definition* is the text before the first double quote, without the
   trailing semicolons and spaces.
2. A synset is an *example* of its hypernym when it has exactly one hypernym (synsets with two or more, e.g.
   `dog` under both `canine` and `domestic_animal`, are left out so that no sentence belongs to two classes); the
   example's text is its definition. Definitions shared by two or more such synsets are left out too (a support
   sentence must never reappear as a query). Instance hypernyms (`@i`: `Paris` under `national_capital`) do not
   count.
3. A class is a synset with at least `min_examples` examples (default 20); it keeps `min_examples` of them,
   chosen by a permutation seeded by `seed` (default 0) among its examples in file order.
4. Classes are split into `train`, `val` and `test` by the first byte of sha256("<pos><offset>"): below 154 →
   train (60%), below 205 → val (20%), else test (20%). A class never changes split when other classes come or
   go (a different WordNet or `min_examples`), and the split is a function of the synset alone.

The `unlabeled` split is text for self-supervised training: every definition and example sentence of every synset
of the two files, except the texts of the val and test classes' examples, as one pseudo-class.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mssl_tf.data.omniglot import DatasetNotFoundError

WORDNET_DIR_ENV = "MSSL_TF_WORDNET_DIR"
DEFAULT_DIRS = ("/usr/share/wordnet",)
PARTS_OF_SPEECH = {"n": "noun", "v": "verb"}
SPLIT_BOUNDS = {"train": 154, "val": 205, "test": 256}  # first sha256 byte of a class: < 154 train, < 205 val
INSTALL_HINT = ("WordNet 3.0's data files (data.noun, data.verb) were not found: `apt-get install wordnet-base` "
                f"(they go to /usr/share/wordnet) or pass --data-dir / set {WORDNET_DIR_ENV} to their directory")


@dataclass(frozen=True)
class Synset:
    """One synset line: `pos` + `offset` identify it; `hypernyms` are (pos, offset) pairs of its `@` pointers."""

    offset: str
    pos: str
    lexicographer_file: int
    words: tuple[str, ...]
    hypernyms: tuple[tuple[str, str], ...]
    definition: str
    examples: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.pos, self.offset)

    @property
    def name(self) -> str:
        return f"{self.words[0]}.{self.pos}.{self.offset}"


def parse_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """`'a dog; "the dog barked"; "it ran"'` → (`'a dog'`, (`'the dog barked'`, `'it ran'`))."""
    definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
    examples = tuple(example.strip() for example in re.findall(r'"([^"]*)"', gloss) if example.strip())
    return definition, examples


def parse_line(line: str, pos: str) -> Synset:
    """One line of a `data.<pos>` file (wndb(5WN): offset, lex_filenum, ss_type, words, pointers, | gloss)."""
    fields, _, gloss = line.partition(" | ")
    tokens = fields.split()
    offset, lexicographer_file = tokens[0], int(tokens[1])
    word_count = int(tokens[3], 16)
    words = tuple(tokens[4 + 2 * index] for index in range(word_count))
    position = 4 + 2 * word_count
    pointer_count = int(tokens[position])
    hypernyms = []
    for index in range(pointer_count):
        symbol, target, target_pos = tokens[position + 1 + 4 * index: position + 4 + 4 * index]
        if symbol == "@":
            hypernyms.append((target_pos, target))
    definition, examples = parse_gloss(gloss)
    return Synset(offset, pos, lexicographer_file, words, tuple(hypernyms), definition, examples)


def find_directory(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding `data.noun` and `data.verb`: `data_dir`, else the environment variable, else
    Debian's place. Raises `DatasetNotFoundError` saying how to get them."""
    candidates = [data_dir] if data_dir else [os.environ.get(WORDNET_DIR_ENV), *DEFAULT_DIRS]
    for candidate in candidates:
        if candidate and all((Path(candidate) / f"data.{name}").is_file() for name in PARTS_OF_SPEECH.values()):
            return Path(candidate)
    searched = ", ".join(str(candidate) for candidate in candidates if candidate)
    raise DatasetNotFoundError(f"{INSTALL_HINT} (searched: {searched})")


def read_synsets(data_dir: str | os.PathLike | None = None) -> dict[tuple[str, str], Synset]:
    """Every noun and verb synset, keyed by (pos, offset), in file order. License lines (leading spaces) are
    skipped."""
    directory = find_directory(data_dir)
    synsets = {}
    for pos, name in PARTS_OF_SPEECH.items():
        with open(directory / f"data.{name}", encoding="utf-8") as handle:
            for line in handle:
                if line.strip() and not line.startswith(" "):
                    synset = parse_line(line.rstrip("\n"), pos)
                    synsets[synset.key] = synset
    return synsets


def split_of(key: tuple[str, str]) -> str:
    """The split of the class whose synset is `key`, from the first byte of sha256("<pos><offset>")."""
    first_byte = hashlib.sha256(f"{key[0]}{key[1]}".encode()).digest()[0]
    return next(split for split, bound in SPLIT_BOUNDS.items() if first_byte < bound)


@dataclass(frozen=True)
class TextClasses:
    """Class arrays of sentences: `texts` str `[classes, per class]` (numpy object), one row per class."""

    texts: np.ndarray
    class_names: tuple[str, ...]


def hypernym_classes(synsets: dict, split: str, min_examples: int = 20, seed: int = 0) -> TextClasses:
    """The classes of `split` (`train`, `val`, `test` or `trainval`), built as the module docstring says."""
    if split not in ("train", "val", "test", "trainval"):
        raise ValueError(f"WordNet hypernym classes have splits train, val, test and trainval, not {split!r}")
    wanted = ("train", "val") if split == "trainval" else (split,)
    candidates = [synset for synset in synsets.values() if len(synset.hypernyms) == 1 and synset.definition]
    occurrences = Counter(synset.definition for synset in candidates)
    examples: dict[tuple[str, str], list[str]] = {}
    for synset in candidates:
        if occurrences[synset.definition] == 1:
            examples.setdefault(synset.hypernyms[0], []).append(synset.definition)
    rows, names = [], []
    for key in synsets:  # file order: nouns, then verbs
        texts = examples.get(key, [])
        if len(texts) >= min_examples and split_of(key) in wanted:
            picks = np.random.default_rng([seed, int(key[1])]).permutation(len(texts))[:min_examples]
            rows.append([texts[index] for index in sorted(picks)])
            names.append(synsets[key].name)
    if not rows:
        raise ValueError(f"no WordNet class of split {split!r} has {min_examples} examples; lower min_examples")
    texts = np.empty((len(rows), min_examples), dtype=object)
    texts[:] = rows
    return TextClasses(texts, tuple(names))


def unlabeled_texts(synsets: dict, min_examples: int = 20, seed: int = 0) -> np.ndarray:
    """Every definition and example sentence of the two files except the val and test classes' example texts,
    once each, in file order (str `[N]`)."""
    held_out = set()
    for split in ("val", "test"):
        held_out.update(hypernym_classes(synsets, split, min_examples, seed).texts.ravel())
    seen, texts = set(), []
    for synset in synsets.values():
        for text in (synset.definition, *synset.examples):
            if text and text not in held_out and text not in seen:
                seen.add(text)
                texts.append(text)
    return np.array(texts, dtype=object)
