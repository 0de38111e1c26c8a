"""Errors a user can cause, and the one way every command line reports them.

Every error that a user can fix (a bad image, a damaged bundle, a mismatched
feature cache, missing weights, a bad dataset layout or option) derives from
`CaptionerError` and says which file and what to do. The command-line entry
points run through `run_command`, so each prints such an error as one line
and exits with the same code; anything else is a bug and keeps its traceback.
Most classes also derive from the built-in a caller would expect
(`ValueError`, `FileNotFoundError`, ...), so library code can catch either.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_SOME_INPUTS_REFUSED = 1  # `python -m demo caption`: some images refused, the others captioned
EXIT_ERROR = 2  # stopped by an error the user can fix (argparse's usage errors exit 2 as well)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = ("exit status: 0 done; 1 (caption only) some images were refused, the others captioned; "
                   "2 stopped by an error you can fix (one line on stderr says what to do); 130 interrupted")


class CaptionerError(Exception):
    """An error a user can cause and fix; the message names the file or option and the fix."""


class MissingFile(CaptionerError, FileNotFoundError):
    """A file or folder a step needs is not there (usually: an earlier step has not run)."""


class DamagedFile(CaptionerError, ValueError):
    """A file is there but cannot be read as what it should be."""


class BadInput(CaptionerError, ValueError):
    """An option, a dataset layout or an output folder that cannot be used as given."""


def run_command(command: Callable[[], int], after_error: str = "",
                interrupted: str = "interrupted") -> int:
    """Run a command-line entry point: a `CaptionerError` becomes one `error:` line and exit status 2."""
    try:
        return command()
    except CaptionerError as exc:
        print(f"error: {exc}" + (f"\n{after_error}" if after_error else ""), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
