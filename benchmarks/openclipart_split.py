"""Records the class partition of Debian's clip-art library as `--dataset imagefolder:` reads it.

`apt-get install openclipart-png`, then `python benchmarks/openclipart_split.py [--image-size 32]`: writes
`benchmarks/results/openclipart_split.json` (classes per split, the partition, the listing's sha256, the dropped
folders and every skipped file with its reason), the split every clip-art result of this project is measured on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mssl_tf.data.image_folder import FolderSettings, load_image_folder  # noqa: E402
from mssl_tf.results import current_commit, write_json  # noqa: E402

ROOT = Path("/usr/share/openclipart/png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--min-images", type=int, default=20)
    args = parser.parse_args()
    start = time.perf_counter()
    settings = FolderSettings(image_size=args.image_size, min_images=args.min_images, images_per_class=args.min_images)
    splits = load_image_folder(args.root, settings)
    record = {**splits.summary(), "seconds": round(time.perf_counter() - start, 1),
              "command": "python benchmarks/openclipart_split.py " + " ".join(sys.argv[1:]),
              "commit": current_commit(Path(__file__).parent)}
    path = write_json(Path(__file__).parent / "results" / "openclipart_split.json", record)
    print(f"{record['classes']} classes, {record['skipped_files']} files skipped → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
