"""The reliability figures of docs/RELIABILITY.md, counted from a real run of the tests that inject the faults.

    python bench/reliability.py            # about 3 minutes on two CPU cores
    python bench/reliability.py -x         # any extra arguments go to pytest

Each test that injects something records what it injected when it starts, and what was survived, detected or
answered as its very last line, so a test that fails anywhere counts as not survived. Pickle payloads record
whether their marker file appeared (executed) whatever the outcome. The script sums these over the run and prints a
table; nothing in it is typed in by hand.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    "tests/train/test_reliability.py", "tests/train/test_checkpoint.py", "tests/train/test_trainer.py",
    "tests/train/test_ema.py", "tests/data/test_data_bad_inputs.py", "tests/data/test_data_folder.py",
    "tests/test_numerics.py",
]
ROWS = [  # label, the count that held, the count tried
    (("faults survived, of those injected (SIGKILL at steps and at every save stage, SIGTERM, SIGINT, full disk, "
      "read-only folder, non-finite losses, a torchrun worker killed)"), "faults_survived", "faults"),
    (("corruptions detected, of those injected (truncated, zeroed, flipped, missing files; malformed safetensors; "
      "weights that do not fit)"), "corruptions_detected", "corruptions"),
    ("bad inputs answered, of those tried (loaded with the pixels checked, or one line naming the path)",
     "bad_inputs_answered", "bad_inputs"),
    ("pickle payloads executed, of those planted (checkpoints and CIFAR batches)", "payloads_executed", "payloads"),
]


class Tally:
    """A pytest plugin: sums the properties each test records with `record_property`."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.outcome] += 1
        if report.when == "teardown":  # holds every property the test recorded
            for key, value in report.user_properties:
                self.counts[key] += int(value)


def table(counts: Counter, outcomes: Counter, seconds: float, command: str) -> str:
    lines = ["| Figure | Count |", "|---|---:|"]
    lines += [f"| {label} | {counts[held]} of {counts[tried]} |" for label, held, tried in ROWS]
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(outcomes.items()))
    lines += ["", f"`{command}`: {summary} in {seconds:.0f} s"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    tally = Tally()
    start = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", *[str(ROOT / f) for f in FILES], *argv], plugins=[tally])
    command = " ".join(["python bench/reliability.py", *argv])
    print()
    print(table(tally.counts, tally.outcomes, time.perf_counter() - start, command))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
