"""How long the command line takes to answer without a model: `--help`, `segment --help` and `eval --list`.

    python -m benchmarks.startup             # median of 5 runs each, in fresh processes

These answers never import torch (tests/test_package.py checks that); this measures what that buys. Prints one
JSON line: seconds per command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["segment", "--help"], ["eval", "--list"])


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scclip_core", *command], cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report = {
        " ".join(command): round(statistics.median(seconds(command) for _ in range(args.repeats)), 3)
        for command in COMMANDS
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
