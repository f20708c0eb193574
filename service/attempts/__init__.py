"""A call's attempts: which deployment to try next, retries in place, fallbacks, hedges,
deadlines, and the lease each attempt owns.

An attempt runs up to its *first answer* (the whole completion of a unary call, the first event
of a stream: `openings`); until then a failure can still fall over to another candidate without
the client seeing it. `first_answer` runs a `Schedule` of attempts to the first one that gets
there (`race`) and hands it over still open; `async with won:` then owns it, and leaving that
block settles whatever was not recorded.
"""

from service.attempts.attempt import Attempt, AttemptLog
from service.attempts.openings import Opening, OpenStream, Streaming, Unary
from service.attempts.race import Won, first_answer
from service.attempts.schedule import Estimate, Schedule
from service.attempts.timing import (
    COOL_DOWN_SLACK_S,
    NO_DEADLINE,
    SYSTEM_CLOCK,
    Clock,
    Deadline,
    TimeRemaining,
)

__all__ = [
    "COOL_DOWN_SLACK_S",
    "NO_DEADLINE",
    "SYSTEM_CLOCK",
    "Attempt",
    "AttemptLog",
    "Clock",
    "Deadline",
    "Estimate",
    "OpenStream",
    "Opening",
    "Schedule",
    "Streaming",
    "TimeRemaining",
    "Unary",
    "Won",
    "first_answer",
]
