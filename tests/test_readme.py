"""README cannot drift: every fenced Python block runs, every shell command in a fenced block is either run here or
listed in `NOT_RUN_HERE` with the reason and the test that exercises it, and every `mssl-tf` command README shows
(fenced or inline) parses with the real command line's flags.

A command added to README that is in neither `RUN_HERE` nor `NOT_RUN_HERE` fails
`test_every_readme_command_is_run_or_listed`, so a new command cannot go unchecked silently; a listed command that
README no longer shows fails it too, so the lists cannot go stale.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent  # the venv's python, mssl-tf and pip
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
TIMEOUT = 300  # seconds, per block or command

# Python blocks run verbatim except for these replacements, each of which must match README exactly once (a block
# that changed fails here until its replacement is updated).
CHEAPER = [
    ("steps_per_epoch=100, epochs=10)", "steps_per_epoch=1, epochs=1)",
     "MAML's example trains 1000 meta-iterations of 32 tasks (about 20 minutes): one meta-iteration here"),
    ("meta_batch=32)", "meta_batch=2)", "2 tasks per meta-iteration instead of 32"),
]

# Python blocks holding one of these run with the slow checks (`pytest -m slow`, .ci/run), measured at load average 5
# on the 2-core machine: MAML's block 44 s (a second-order meta-step traced; the zoo block: 19 s).
SLOW_BLOCKS = {'build_method("maml"': "a second-order MAML step is traced and run"}

# Shell commands (whitespace collapsed, comments dropped) → why they are not run here and which test runs them.
NOT_RUN_HERE = {
    "mssl-tf train --dataset wordnet --split unlabeled --backbone transformer --method simcse --batch-size 128 --minutes 10 --steps 1000000 --output runs/simcse":
        "needs WordNet 3.0 (Debian) and trains for minutes; the same commands on a WordNet-format fixture: tests/test_text.py::test_the_readme_text_commands_on_the_fixture",
    "mssl-tf train --dataset wordnet --backbone transformer --method protonet --ways 20 --shots 5 --queries 5 --init-from runs/simcse --minutes 10 --steps 1000000 --output runs/simcse-protonet":
        "needs WordNet 3.0 (Debian) and trains for minutes; the same commands on a WordNet-format fixture: tests/test_text.py::test_the_readme_text_commands_on_the_fixture",
    "mssl-tf eval runs/simcse-protonet --settings 5w1s,5w5s":
        "needs WordNet 3.0 (Debian) and trains for minutes; the same commands on a WordNet-format fixture: tests/test_text.py::test_the_readme_text_commands_on_the_fixture",
    "mssl-tf export runs/simcse-protonet --base-dir export && mssl-tf serve --model_name simcse-protonet --model_base_path export/simcse-protonet":
        "needs WordNet 3.0 (Debian) and trains for minutes; the same commands on a WordNet-format fixture: tests/test_text.py::test_the_readme_text_commands_on_the_fixture",
    'python3 -m venv .venv && .venv/bin/pip install -e ".[serving]" && .venv/bin/mssl-tf pipeline':
        "installs the package (network, minutes); the pipeline it ends with is run by "
        "tests/test_cli.py::test_pipeline_loads_exports_serves_and_queries, the installed package by "
        "tests/test_packaging.py::test_an_installed_copy_lists_and_loads_the_zoo_with_its_hashes_checked",
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest -m "not slow"':
        "is the test suite itself; .ci/run runs it verbatim (tests/test_readme.py::test_ci_runs_the_readme_test_command)",
    "mssl-tf train --method protonet --ways 60 --shots 5 --queries 5 --minutes 35 --output runs/protonet":
        "trains for 35 minutes; the same flags for 4 steps: tests/test_cli.py::test_train_eval_and_results_table",
    "mssl-tf eval runs/protonet --settings 5w1s,5w5s,20w1s,20w5s --episodes 600 --results-dir benchmarks/results":
        "needs the 35-minute run and writes benchmarks/results; on a 4-step run: "
        "tests/test_cli.py::test_train_eval_and_results_table",
    "mssl-tf train --method simclr --batch-size 256 --views omniglot --minutes 30 --steps 100000 --output runs/simclr":
        "trains for 30 minutes; SimCLR for 2 steps from the command line: "
        "tests/test_ssl_methods.py::test_train_floor_and_eval_from_the_command_line",
    "mssl-tf eval runs/simclr --protocol knn":
        "needs the 30-minute run; --protocol knn on a 2-step run, its record recomputed: "
        "tests/test_ssl_methods.py::test_train_floor_and_eval_from_the_command_line",
    "mssl-tf serve --port 8500 --rest_api_port 8501 --model_name prototypical-networks-conv4-omniglot "
    '--model_base_path "$PWD/export/prototypical-networks-conv4-omniglot"':
        "serves until killed; the same flags, queried over gRPC and REST: "
        "tests/test_serving_cli.py::test_same_flags_same_client_same_answers",
    "mssl-tf train --dataset imagefolder:/usr/share/openclipart/png --image-size 32 --ways 5 --shots 1 --queries 5 "
    "--minutes 10 --output runs/clipart-protonet":
        "trains for 10 minutes (and needs the Debian package openclipart-png); the same flags on a generated folder: "
        "tests/test_image_folder.py::test_train_and_eval_on_a_folder_from_the_command_line",
    "mssl-tf eval runs/clipart-protonet --settings 5w1s,5w5s --queries 10":
        "needs the 10-minute run; eval on a folder run: "
        "tests/test_image_folder.py::test_train_and_eval_on_a_folder_from_the_command_line",
}


def check_results(scratch: Path, completed) -> None:
    """`mssl-tf results` rewrites README's tables from the records: on a copy, nothing may change."""
    assert (scratch / "README.md").read_text() == README.read_text(), (
        "README's generated tables differ from what `mssl-tf results` makes of benchmarks/results/*.json: "
        "run `mssl-tf results` and commit README.md")


def check_untrained_floor(scratch: Path, completed) -> None:
    run = scratch / "runs" / "random-conv4"
    assert (run / "model.keras").is_file()
    assert '"steps": 0' in (run / "train.json").read_text()


def check_export(scratch: Path, completed) -> None:
    version = scratch / "export" / "prototypical-networks-conv4-omniglot" / "1"
    assert (version / "saved_model.pb").is_file(), completed.stdout[-2000:]


# Shell commands run here, each in a scratch directory (they write runs/ or README.md) → the check of its result.
RUN_HERE = {
    "mssl-tf results": check_results,
    "mssl-tf train --method simclr --steps 0 --output runs/random-conv4": check_untrained_floor,
    "mssl-tf export prototypical-networks-conv4-omniglot --version 1": check_export,
}
# Of those, the ones that run with the slow checks, measured at load average 5: 63 s (200 validation episodes) and
# 26 s (four signatures traced and saved); `mssl-tf results` took 17 s.
SLOW_COMMANDS = {"mssl-tf train --method simclr --steps 0 --output runs/random-conv4",
                 "mssl-tf export prototypical-networks-conv4-omniglot --version 1"}


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line number of the opening fence) of every fenced block."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if language is None:
                language, start, lines = line[3:].strip().lower(), number, []
            else:
                blocks.append((language, "\n".join(lines) + "\n", start))
                language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"README.md: the block opened at line {start} is never closed"
    return blocks


def without_comment(line: str) -> str:
    """The line up to a `#` that starts a shell comment (outside quotes, at the start or after whitespace)."""
    quote = None
    for index, character in enumerate(line):
        if quote:
            quote = None if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def shell_commands(code: str, language: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments and `$ ` prompts dropped, whitespace collapsed."""
    commands, pending = [], ""
    for line in code.splitlines():
        if language == "console":
            if not line.startswith("$ ") and not pending:
                continue  # output of the previous command
            line = line[2:] if line.startswith("$ ") else line
        line = without_comment(line).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join((pending + line).split())
        pending = ""
        if command:
            commands.append(command)
    return commands


def readme_blocks():
    return fenced_blocks(README.read_text())


def readme_commands() -> list[str]:
    return [command for language, code, _ in readme_blocks() if language in SHELL_LANGUAGES
            for command in shell_commands(code, language)]


def python_blocks() -> list[tuple[str, int]]:
    return [(code, line) for language, code, line in readme_blocks() if language in ("python", "py", "python3")]


def mssl_tf_invocations(command: str) -> list[list[str]]:
    """The argument lists of every `mssl-tf` in a shell command (`a && b`, `.venv/bin/mssl-tf ...` included)."""
    invocations = []
    for part in re.split(r"&&|\|\||;|\|", command):
        words = shlex.split(part)
        if words and Path(words[0]).name == "mssl-tf":
            invocations.append(words[1:])
    return invocations


def parse_error(arguments: list[str]) -> str | None:
    """None when the real `mssl-tf` parser takes `arguments` (or only misses a required argument: a verb
    mentioned without its operands), else its error message."""
    from mssl_tf.cli import build_parser

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(arguments)
        except SystemExit as exit:
            message = stderr.getvalue()
            if exit.code == 0 or "the following arguments are required" in message:
                return None
            return message.strip().splitlines()[-1] if message.strip() else f"exit {exit.code}"
    return None


def scratch_environment() -> dict:
    """The venv first on PATH (`mssl-tf`, `python`), and Omniglot found from any directory."""
    from mssl_tf.data import omniglot

    environment = dict(os.environ)
    environment["PATH"] = f"{VENV_BIN}{os.pathsep}{environment.get('PATH', '')}"
    environment["MSSL_TF_OMNIGLOT_DIR"] = str(omniglot.resolve_data_dir(None))
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return environment


def covering_tests(reason: str) -> list[str]:
    return re.findall(r"tests/[\w/]+\.py::\w+", reason)


# === Tests ===


def test_every_readme_command_is_run_or_listed():
    commands = readme_commands()
    assert commands, "no shell commands found in README.md: the block parser is broken"
    unlisted = [command for command in commands if command not in RUN_HERE and command not in NOT_RUN_HERE]
    assert not unlisted, (
        "README.md shows commands that tests/test_readme.py neither runs nor lists with a reason; add each to "
        f"RUN_HERE (cheap: with a check of its result) or NOT_RUN_HERE (with the test that exercises it): {unlisted}")
    stale = [command for command in [*RUN_HERE, *NOT_RUN_HERE] if command not in commands]
    assert not stale, f"tests/test_readme.py lists commands README.md no longer shows: {stale}"
    assert not set(RUN_HERE) & set(NOT_RUN_HERE)


def test_every_command_not_run_here_names_an_existing_test():
    for command, reason in NOT_RUN_HERE.items():
        named = covering_tests(reason)
        assert named, f"NOT_RUN_HERE[{command!r}] names no test (tests/<file>.py::<test>)"
        for test in named:
            path, name = test.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{test} does not exist"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(command for command in readme_commands() if "pytest" in command)
    assert test_command in ci.splitlines(), ".ci/run must run README's test command verbatim"


def test_every_mssl_tf_command_in_readme_parses():
    """Fenced (run or not) and inline (`mssl-tf ...` in backticks): a renamed or removed flag or verb fails."""
    text = README.read_text()
    shown = [arguments for command in readme_commands() for arguments in mssl_tf_invocations(command)]
    inline = re.findall(r"(?<!`)`(mssl-tf [^`]+)`", text)
    assert len(inline) >= 5, "README's inline mssl-tf commands were not found: the pattern is broken"
    shown += [shlex.split(span)[1:] for span in inline]
    errors = {" ".join(arguments): parse_error(arguments) for arguments in shown}
    assert not {command: error for command, error in errors.items() if error}, errors


def test_cheaper_replacements_and_slow_marks_still_match():
    code = "".join(block for block, _ in python_blocks())
    for old, new, reason in CHEAPER:
        assert code.count(old) == 1, f"CHEAPER replacement {old!r} ({reason}) matches README {code.count(old)} times"
    for key, reason in SLOW_BLOCKS.items():
        assert key in code, f"SLOW_BLOCKS key {key!r} ({reason}) is in no README Python block"
    assert SLOW_COMMANDS <= set(RUN_HERE)


def marked(values, is_slow):
    return [pytest.param(value, marks=pytest.mark.slow) if is_slow(value) else value for value in values]


@pytest.mark.parametrize("index", marked(range(len(python_blocks())),
                                         lambda index: any(key in python_blocks()[index][0] for key in SLOW_BLOCKS)),
                         ids=lambda index: f"block{index}")
def test_python_block_runs(index):
    code, line = python_blocks()[index]
    for old, new, _ in CHEAPER:
        code = code.replace(old, new)
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=scratch_environment(),
                               capture_output=True, text=True, timeout=TIMEOUT)
    assert completed.returncode == 0, (
        f"README.md's Python block at line {line} failed:\n{code}\n--- stderr ---\n{completed.stderr[-3000:]}")


@pytest.mark.parametrize("command", marked(sorted(RUN_HERE), SLOW_COMMANDS.__contains__))
def test_cheap_command_runs(command, tmp_path):
    assert command in readme_commands(), f"{command!r} is no longer in README.md"
    shutil.copy(README, tmp_path / "README.md")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "results").symlink_to(ROOT / "benchmarks" / "results")
    completed = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=scratch_environment(),
                               capture_output=True, text=True, timeout=TIMEOUT)
    assert completed.returncode == 0, f"`{command}` failed:\n{completed.stderr[-3000:]}"
    RUN_HERE[command](tmp_path, completed)


def test_the_parsers_find_what_they_should():
    """The block and command parsers on a known text: continuations, comments, prompts, an unclosed fence."""
    text = ("x\n```bash\nmssl-tf a --b 1 \\\n    --c 2   # comment\n\n# only a comment\necho '#not' # yes\n```\n"
            "```console\n$ mssl-tf zoo list\noutput line\n```\n```python\nprint(1)\n```\n")
    blocks = fenced_blocks(text)
    assert [(language, line) for language, _, line in blocks] == [("bash", 2), ("console", 9), ("python", 13)]
    assert shell_commands(blocks[0][1], "bash") == ["mssl-tf a --b 1 --c 2", "echo '#not'"]
    assert shell_commands(blocks[1][1], "console") == ["mssl-tf zoo list"]
    assert mssl_tf_invocations("python3 -m venv .venv && .venv/bin/mssl-tf pipeline --train") == [["pipeline", "--train"]]
    assert parse_error(["train", "--no-such-flag"]) is not None
    assert parse_error(["zoo", "show"]) is None  # a verb mentioned without its operand
    with pytest.raises(AssertionError, match="never closed"):
        fenced_blocks("```bash\nls\n")
