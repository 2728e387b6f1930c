"""
Log output for machines: one JSON object per line.

Use it as twistd's initial log observer::

    twistd -n --logger sockplay.logs.jsonObserver sockplay

Each line holds C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{text}
(the formatted message) and the event's own keyword fields, such as the
per-connection fields C{peer}, C{listener}, C{framing}, C{messages},
C{bytesIn}, C{bytesOut}, C{duration} and C{outcome}.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    formatEvent,
)

__all__ = ["eventAsJSONLine", "jsonObserver"]


def _jsonable(value: object) -> Any:
    """
    A JSON-safe form of a log field. Bytes (which may come from a client)
    are backslash-escaped, never written raw.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def eventAsJSONLine(event: LogEvent) -> str:
    """
    Render one log event as a line of JSON (ending with a newline).
    """
    when = event.get("log_time")
    record: dict[str, Any] = {
        "time": (
            datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
            if isinstance(when, (int, float))
            else None
        ),
        "level": getattr(event.get("log_level"), "name", None),
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in record or key == "format":
            continue
        record[key] = _jsonable(value)
    # ensure_ascii keeps the line 7-bit clean whatever a field holds.
    return json.dumps(record, ensure_ascii=True) + "\n"


def jsonObserver(outFile: IO[str] | None = None) -> ILogObserver:
    """
    A log observer that writes one JSON object per line to C{outFile}
    (standard output by default): the factory for twistd's C{--logger}.
    """
    return FileLogObserver(outFile if outFile is not None else sys.stdout, eventAsJSONLine)
