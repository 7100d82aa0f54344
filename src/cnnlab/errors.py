"""The one base class of the errors a user should see as one line: cnnlab's bottom layer, importing nothing of it."""

from __future__ import annotations


class CnnlabError(Exception):
    """A user's mistake or a refused input: one line, no traceback. The message stands alone (what was refused and
    why, what to do), since the command line prints `str(error)` and exits with `exit_code`.

    Library errors subclass it beside the base they had (`class DataError(CnnlabError)`, `class WriteError(CnnlabError,
    OSError)`), so that code catching those bases is unchanged.
    """

    exit_code: int = 1  # the command line's exit status; 2 is a usage error's, as argparse's
