"""Records the WordNet class construction of this machine's WordNet 3.0 (`mssl_tf/data/wordnet.py`): the classes of
every split by name (synset lemma, part of speech, offset), their counts, the unlabeled split's size and the sha256
of the data files read, in benchmarks/results/wordnet_classes.json.

    .venv/bin/python benchmarks/wordnet_classes.py [--data-dir /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

from mssl_tf.data import wordnet

RESULTS = Path(__file__).parent / "results" / "wordnet_classes.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    directory = wordnet.find_directory(args.data_dir)
    synsets = wordnet.read_synsets(directory)
    splits = {split: wordnet.hypernym_classes(synsets, split) for split in ("train", "val", "test")}
    record = {
        "what": "WordNet 3.0 hypernym classes (mssl_tf/data/wordnet.py), min_examples 20, seed 0",
        "command": "python benchmarks/wordnet_classes.py",
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "files": {name: hashlib.sha256((directory / f"data.{name}").read_bytes()).hexdigest()
                  for name in wordnet.PARTS_OF_SPEECH.values()},
        "synsets_read": len(synsets),
        "classes": {split: len(classes.class_names) for split, classes in splits.items()},
        "examples_per_class": 20,
        "unlabeled_sentences": len(wordnet.unlabeled_texts(synsets)),
        "class_names": {split: list(classes.class_names) for split, classes in splits.items()},
    }
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print({key: record[key] for key in ("classes", "unlabeled_sentences", "synsets_read")})


if __name__ == "__main__":
    main()
