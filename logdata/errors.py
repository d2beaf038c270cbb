"""The one exception type of the data stage."""

from __future__ import annotations


class LogDataError(Exception):
    """An unusable input or an inconsistent artefact.

    The message is one line meant for the user; the CLI prints ``error: <message>`` and exits
    with status 2 instead of showing a traceback.
    """
