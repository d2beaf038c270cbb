"""The one exception type of the data stage, and the one-line-error wrapper every CLI uses."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error (still one line; the traceback is logged at DEBUG)
EXIT_USAGE = 2  # bad input: the message is meant for the user
EXIT_INTERRUPTED = 130


class LogDataError(Exception):
    """An unusable input or an inconsistent artefact.

    The message is one line meant for the user; the CLI prints ``error: <message>`` and exits
    with status 2 instead of showing a traceback.
    """


def one_line(exc: BaseException) -> str:
    r"""Return an exception's message with all white space folded into single spaces.

    >>> one_line(ValueError("bad\n  input"))
    'bad input'
    """
    return " ".join(str(exc).split())


def run_cli(body: Callable[[], int | None],
            expected: tuple[type[BaseException], ...] = (LogDataError, OSError)) -> int:
    """Run a CLI body and turn any error into one line on stderr and a non-zero status.

    Args:
        body: The command's work; returns an exit status (``None`` counts as 0).
        expected: Exception types that mean bad input: ``error: <message>``, status 2.

    Returns:
        The body's status; 2 for an expected error; 1 (``error: <Type>: <message>``, the
        traceback logged at DEBUG level) for any other exception; 130 on Ctrl-C.

    >>> def bad() -> int:
    ...     raise LogDataError("no such file")
    >>> run_cli(bad, (LogDataError,))
    2
    """
    try:
        return int(body() or EXIT_OK)
    except expected as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one-line error, never a traceback
        logger.debug("unexpected error", exc_info=True)
        print(f"error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
