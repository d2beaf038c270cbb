"""The docstring examples of the data-stage, next-key reward and service modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("logdata.drain", "logdata.windows", "logdata.templates.patch", "logdata.templates.build",
           "logdata.templates.prompts", "logdata.errors", "verl_recipes.local.keyseq.model", "logdata.io",
           "logdata.cliargs", "logdata.formats", "logdata.readers", "logdata.keyseq.sequences",
           "reward.keyseq", "serving.events", "serving.transport", "serving.worker",
           "serving.scoring")


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
