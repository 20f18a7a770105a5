"""Log lines that say which channel and task they are about: plain text, or JSON a line.

LOG_FORMAT=json (settings) picks JsonFormatter for log shippers. The context filter adds the
channel (pollers.log_context, set around polls, sends and probes) and the Celery task id.
Secrets and message bodies are never passed to a logger in the first place; tests/logcheck.py
fails any test whose log output contains one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from celery import current_task

from pollers.log_context import current_channel

CONTEXT_FIELDS = ("channel_id", "channel", "task_id", "task")


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (channel := current_channel()) is not None:
            record.channel_id, record.channel = channel
        task = current_task
        request_id = getattr(getattr(task, "request", None), "id", None) if task else None
        if request_id:
            record.task_id, record.task = request_id, task.name
        return True


def context_of(record: logging.LogRecord) -> dict[str, str]:
    return {name: value for name in CONTEXT_FIELDS if (value := getattr(record, name, None))}


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger [channel=… task=…]: message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        context = context_of(record)
        record.context = (
            " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]" if context else ""
        )
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **context_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)
