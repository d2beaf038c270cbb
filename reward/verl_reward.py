"""VeRL entry point: ``reward.custom_reward_function`` and ``reward.reward_manager`` target this file.

verl 0.9.1 loads this file by path (``importlib`` ``spec_from_file_location``, under a generated
module name) in every ``RewardLoopWorker`` Ray actor, and — when
``reward.reward_manager.source=importlib`` points here — also in the process that runs the
trainer (the ``TaskRunner`` actor), where it registers the ``grpo_class_weighted`` advantage
estimator as a side effect of ``import reward.advantage``.

Loading by path does not put the repository on ``sys.path``. The ``reward`` package is normally
pip-installed (editable); when ``import reward`` still fails, the repository root (this file's
grandparent folder) is appended to ``sys.path`` and the import retried.

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
    import reward
except ImportError:  # loaded by path without the package installed: use this checkout
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import reward.advantage  # noqa: F401  (registers the grpo_class_weighted estimator)
from reward.api import compute_score, compute_score_async

__all__ = ["LogRLRewardManager", "compute_score", "compute_score_async"]

try:
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
except ImportError:  # verl absent (TRL-only installs): no reward manager to export
    NaiveRewardManager = None  # type: ignore[assignment,misc]


if NaiveRewardManager is not None:

    class LogRLRewardManager(NaiveRewardManager):
        """verl's naive reward manager, loaded through this file.

        Pointing ``reward.reward_manager`` here (``source=importlib``) makes verl import this
        module in the trainer process, which registers ``grpo_class_weighted``. Scoring is
        unchanged from ``naive``.
        """
