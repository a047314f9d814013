"""Helpers every layer may import: the user's errors and their one-line messages, files written whole or not at all,
config containers, the install check."""
