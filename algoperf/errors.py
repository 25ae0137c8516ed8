"""Errors that mean "the user's input is wrong", as opposed to a bug.

The CLI turns every `UserError` into one line on stderr (the message, which
names the file, flag or field) and exit code 2; any other exception is a bug
and keeps its traceback. Modules that check input (flags, submission files,
search spaces, datasets, checkpoints) raise a subclass, so the CLI needs no
list of every module's error types. It subclasses ValueError because most of
these used to be plain ValueErrors, and callers that catch ValueError still
work.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input; the message names the file, flag or field and says what is wrong."""


class DataError(UserError):
    """A dataset file that is missing, malformed, or holds values of the wrong type or range.

    Readers raise it once, at open, with the file and the field in the message
    (e.g. 'train.npz: node_feat has dtype float32, expected int64').
    """


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded safely (needs pickle, truncated, wrong keys)."""

