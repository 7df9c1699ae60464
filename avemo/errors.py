"""Errors a user can cause. The CLI prints them as one line, never a traceback."""


class AvemoError(Exception):
    """A problem with the user's input (file, label, argument, cache); the message says what to do."""
