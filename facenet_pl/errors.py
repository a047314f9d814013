"""Errors that are the user's to fix: entry points print their message alone, without a traceback."""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """A config value or input that cannot work; the message names the key or file and what to do."""


@contextmanager
def exit_on_user_error(logger_name: str = "facenet_pl") -> Iterator[None]:
    """For entry points: a :class:`ConfigError` or missing file is printed as one line and exits 1."""
    try:
        yield
    except (ConfigError, FileNotFoundError) as e:  # the user's to fix: the message, not a traceback
        logging.getLogger(logger_name).error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
