"""Command-line plumbing shared by the checkpoint converters (not a public API).

A converter's ``main`` hands its conversion to :func:`run_conversion`, which turns the
failures a user can cause (missing, unreadable, refused or unconvertible source, an
existing destination) into one ``error: ...`` line on stderr and exit status
:data:`EXIT_ERROR`, without a traceback.  The converters' loaders raise those errors
with messages naming the file and the problem; nfnets_mm's ``safe_load`` reports empty,
truncated and unsafe files itself (``CorruptCheckpointError`` /
``UnsafeCheckpointError``, both ``RuntimeError``).
"""
import pickle
import sys
from typing import Callable, TypeVar

#: Exit status of a failed conversion (``error: ...`` on stderr), as argparse uses.
EXIT_ERROR = 2

#: What a conversion reports as an ``error:`` line: ``OSError`` (missing source, existing
#: destination ...), ``EOFError`` / ``pickle.UnpicklingError`` (unreadable or refused
#: pickles), ``RuntimeError`` (``safe_load``'s refusals), ``KeyError`` / ``ValueError`` /
#: ``TypeError`` (sources that cannot be converted).
CONVERSION_ERRORS = (OSError, EOFError, pickle.UnpicklingError, RuntimeError, KeyError,
                     ValueError, TypeError)

Result = TypeVar('Result')


def run_conversion(convert: Callable[[], Result],
                   report: Callable[[Result], None]) -> int:
    """Run ``convert()`` and ``report`` its result; returns the exit status (0, or
    :data:`EXIT_ERROR` after printing ``error: <message>`` for :data:`CONVERSION_ERRORS`).
    """
    try:
        result = convert()
    except CONVERSION_ERRORS as err:
        print(f'error: {err}', file=sys.stderr)
        return EXIT_ERROR
    report(result)
    return 0
