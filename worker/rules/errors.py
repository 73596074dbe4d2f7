"""TrackerError: the one root of every error the tracker raises on purpose.

An application catches ``pixverse_tracker.TrackerError`` to catch them all. Each subclass's
docstring says what the error means; the instance's message carries the specifics (which
setting, which id, which URL). A subclass keeps the standard base its callers already catch
(``ValueError`` for a value refused), so ``except ValueError`` keeps working too.

It lives in ``rules/`` because the rules raise errors of their own (InvalidId,
InvalidWebhookUrl, InvalidSecret) and may import nothing outside ``rules/``; every other room
may import the rules.
"""


class TrackerError(Exception):
    """Something the tracker refused or could not do; the message says what and why."""
