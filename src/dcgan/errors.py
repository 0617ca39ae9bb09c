"""Errors a user's input causes: the entry points print their message in one line and exit with status 2."""


class UserError(Exception):
    """Base of the mistakes a user can fix (a missing file, a bad config value); the message says how."""


class DivergenceError(UserError):
    """A loss became NaN or inf; the message names the loss, the step and the checkpoint to resume from."""
