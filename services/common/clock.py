"""Time as the services keep and answer it: aware UTC datetimes, written out as ISO 8601 with `Z`.

Plain Python, so rules (`domain.py`) can use it. The column type that stores these datetimes is
`services.common.db.UtcDateTime`.
"""

from datetime import UTC, datetime


def utcnow():
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def iso_utc(moment):
    """`moment` as the API writes timestamps: ISO 8601 in UTC with microseconds and `Z` (None stays None)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
