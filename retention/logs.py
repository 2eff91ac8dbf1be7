"""structlog set-up: JSON lines when not on a terminal, readable console output on one.

The standard library's loggers (SQLAlchemy, APScheduler, ...) go through the same
processors and renderer, so every line of a process has one format. Every line
passes `redact` last before rendering: passwords in URLs (``scheme://user:PASSWORD@``)
and every registered secret value (`add_secrets`: the audit key, hash keys, values
substituted from the environment into the policy) are replaced by ``***``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["REDACTED", "add_secrets", "configure", "get_logger", "redact", "redact_text"]

REDACTED = "***"
#: ``scheme://user:password@``: keep scheme and user, hide the password.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@\s/]+)@")
#: Secret values shorter than this are not redacted (they would mangle ordinary text).
_MIN_SECRET = 4

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def add_secrets(values: Iterable[str]) -> None:
    """Register values that must never appear in a log line (process-wide)."""
    with _secrets_lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)


def redact_text(text: str) -> str:
    """`text` with URL passwords and registered secrets replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: redact every value of the event (see `redact_text`)."""
    for key in list(event_dict):
        if key.startswith("_"):  # ProcessorFormatter's own bookkeeping
            continue
        event_dict[key] = _redact_value(event_dict[key])
    return event_dict


#: One lock for every line written, by structlog or by the standard library, so that
#: lines from different threads never interleave.
_WRITE_LOCK = threading.Lock()


class _LineWriter:
    """structlog's logger: writes each rendered event as one line, under `_WRITE_LOCK`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        with _WRITE_LOCK:
            self._stream.write(message + "\n")
            self._stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's handler: the same lock and one write per line. Marks
    the handler this module installs, so `configure` can replace it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with _WRITE_LOCK:
                self.stream.write(line + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(record)


def configure(
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    level: int = logging.WARNING,
    levels: Mapping[str, int] | None = None,
    min_level: int = logging.DEBUG,
) -> None:
    """Configure structlog and the standard library's root logger (idempotent).

    `level` is the root logger's level; `levels` sets named loggers' levels (e.g.
    ``{"apscheduler": logging.INFO}``); `min_level` drops structlog events below it.
    """
    out = stream or sys.stdout
    as_json = (not out.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact, renderer],
        logger_factory=lambda *_args: _LineWriter(out),
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(out)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    for name, value in (levels or {}).items():
        logging.getLogger(name).setLevel(value)


def get_logger(**context: Any) -> Any:
    """A structlog logger with `context` bound."""
    return structlog.get_logger("retention").bind(**context)
