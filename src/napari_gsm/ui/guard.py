"""Turn a person's mistake into a status message instead of a traceback."""

from __future__ import annotations

import functools

from ..io import LandmarkFileError, ModelFileError

__all__ = ["USER_ERRORS", "guarded"]

#: What a person can cause (no model yet, missing landmarks, an unreadable file, ...).
USER_ERRORS = (ValueError, LookupError, LandmarkFileError, ModelFileError, OSError)


def guarded(method):
    """Show a user error of ``method`` in ``self.set_status`` (red) and return None."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except USER_ERRORS as exc:
            self.set_status(str(exc), error=True)
            return None

    return wrapper
