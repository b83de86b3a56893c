#!/usr/bin/env bash
# Builds benchmarks/peers/.venv: the PyTorch side of the peers benchmark (issue 14).
# Never a dependency of mssl-tf; about 5.5 GB installed (torch from PyPI brings its CUDA libraries).
# Run at low priority on a shared machine:  nice -n 19 bash benchmarks/peers/make_venv.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3.11}"

"$python" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --upgrade pip
"$pip" install torch==2.14.1 torchvision==0.29.1
# learn2learn's imports, installed before it because it is built with --no-deps.
"$pip" install tqdm requests scipy gym qpth

# learn2learn 0.2.0's sdist ships C files generated for old Pythons, which do not compile on 3.11:
# drop them and let Cython (< 3, the syntax it was written for) regenerate them from the .pyx sources.
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
# Only learn2learn from source: with `:all:` pip would also build its build dependency Cython from source.
"$pip" download learn2learn==0.2.0 --no-deps --no-binary learn2learn -d "$build"
tar -xzf "$build"/learn2learn-0.2.0.tar.gz -C "$build"
src="$build/learn2learn-0.2.0"
find "$src/learn2learn" -name '*.c' -delete
rm -rf "$src/.eggs"
sed -i -E \
    -e 's/^(\s*)use_cython\s*=.*/\1use_cython = True/' \
    -e "s/^(\s*)extension_type\s*=.*/\1extension_type = '.pyx'/" \
    "$src/setup.py"
"$pip" install "cython<3" setuptools wheel
if (cd "$src" && "$pip" install --no-build-isolation --no-deps .); then
    echo "learn2learn 0.2.0 built"
else
    # compare.py then times the same algorithm written with torch.func and says so in its record.
    echo "learn2learn did not build; the torch.func MAML stands in for it" >&2
fi
"$venv/bin/python" -c "import torch; print('torch', torch.__version__)"
"$venv/bin/python" -c "import learn2learn; print('learn2learn', learn2learn.__version__)" || true
