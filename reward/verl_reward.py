"""VeRL entry point: ``reward.custom_reward_function.path`` targets this file.

verl 0.9.1 loads this file by path (``importlib`` ``spec_from_file_location``, under a generated
module name) in every ``RewardLoopWorker`` Ray actor. Loading by path does not put the
repository on ``sys.path``. The ``reward`` package is normally pip-installed (editable); when
``import reward`` still fails, the repository root (this file's grandparent folder) is appended
to ``sys.path`` and the import retried.

Functions (pick one with ``reward.custom_reward_function.name``):

* :func:`compute_score` — synchronous; verl runs it in its event loop's thread pool. Perplexity
  requests from concurrent threads still share forward passes through the micro-batcher.
* :func:`compute_score_async` — a coroutine; verl awaits it, so all samples of a worker's chunk
  run concurrently in one event loop and batch best. Recommended for GRPO with perplexity.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import reward  # noqa: F401
except ImportError:  # loaded by path without the package installed: use this checkout
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from reward.api import compute_score, compute_score_async

__all__ = ["compute_score", "compute_score_async"]
