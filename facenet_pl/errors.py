"""Errors that are the user's to fix: entry points print their message alone, without a traceback."""


class ConfigError(ValueError):
    """A config value or input that cannot work; the message names the key or file and what to do."""
