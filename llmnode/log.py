"""structlog configuration: JSON off a terminal, pretty on one (no I/O beyond stderr).

Events are snake_case names with data in keys; ``node_id`` is bound once with
:func:`bind_node`. :class:`RateLimitedLogger` keeps floods of bad input from flooding the log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

_configured = False


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog once per process. ``json=None`` picks by whether stderr is a tty."""
    global _configured
    use_json = (not sys.stderr.isatty()) if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def bind_node(node_id: str, name: str | None = None) -> None:
    """Bind the node's id (and name) to every later log event of this context."""
    structlog.contextvars.bind_contextvars(node_id=node_id[:12], **({"node": name} if name else {}))


class RateLimitedLogger:
    """Logs an event at most once per ``interval`` seconds per key, reporting how many were
    suppressed in between. Used for rejections of bad input, which an attacker controls."""

    def __init__(self, logger: Any, interval: float = 5.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, key: str, **data: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        self._logger.warning(event, suppressed=suppressed, **data)
