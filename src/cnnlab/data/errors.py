"""The one exception the data package lets reach a user."""

from __future__ import annotations

from cnnlab.errors import CnnlabError


class DataError(CnnlabError):
    """A data problem explained in one message a user can act on.

    The CLI prints ``str(err)`` and exits non-zero, so the message must stand alone: no traceback is shown.
    """
