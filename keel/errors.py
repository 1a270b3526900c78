"""What kind of failure an exception is: the user's to fix, worth a retry, or a bug.

- ``KeelError`` and its subclasses are failures a user can act on (bad data, a bad
  setting, an unknown version, a refused promotion). The CLI prints their message on one
  line and exits with their ``exit_code``; nothing else is caught that way.
- ``is_transient`` says whether an exception can pass on a second try: a network error,
  a timeout, a server that answered 429/503, a locked sqlite database. Prefect tasks
  retry only those (``retry_transient`` is their ``retry_condition_fn``); a deterministic
  error such as a missing data version fails at once.
- Anything else is unexpected: the CLI prints its traceback and exits with
  ``EXIT_INTERNAL``.

This module imports nothing heavy and has no effects at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

EXIT_USER = 1  # bad data, refused promotion, unknown version: the message says what to fix
EXIT_CONFIG = 2  # bad arguments or settings, a backend that does not answer
EXIT_REPLAY_DIFFERS = 3
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug in keel or below it; the traceback is printed


class KeelError(Exception):
    """A failure the user can act on; the message names what and where."""

    exit_code = EXIT_USER


class InputError(KeelError, ValueError):
    """Bad input: a month, a file, a batch, a suite, a version that does not exist."""


class ConfigError(KeelError, ValueError):
    """A settings file or variable that keel cannot use (a key, a target, a family, a param)."""

    exit_code = EXIT_CONFIG


class PromotionError(KeelError, RuntimeError):
    """A promotion, rollback or lookup that keel refuses; aliases are untouched."""


class NotFoundError(KeelError, LookupError):
    """Something the user named (a model version, a run) does not exist in the store that
    answered. Raised only on the store's own "does not exist" answer, never on an error."""


# Exception class names (anywhere in the MRO) that mean "the network or a server hiccuped":
# builtins, urllib3/requests, httpx, botocore, without importing any of them.
_TRANSIENT_CLASSES = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "URLError",
        "RemoteDisconnected",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "NewConnectionError",
        "ProtocolError",
        "TransportError",  # httpx: ConnectError, ReadTimeout, ...
        "EndpointConnectionError",
        "ConnectionClosedError",
    }
)
# MLflow error codes that a retry can get past.
_TRANSIENT_MLFLOW_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
)
# Messages of wrapped errors (sqlite, MLflow's REST client after its own retries) that can pass.
_TRANSIENT_MESSAGES = (
    "database is locked",
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "temporarily unavailable",
    "too many requests",
    " 429 ",
    " 502 ",
    " 503 ",
    " 504 ",
)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and every cause/context behind it (each once)."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def is_transient(exc: BaseException) -> bool:
    """True when the failure can pass on a retry (network, timeouts, lock contention)."""
    for err in chain(exc):
        if isinstance(err, KeelError):
            return False  # a user-facing verdict is deterministic
        if any(cls.__name__ in _TRANSIENT_CLASSES for cls in type(err).__mro__):
            return True
        if getattr(err, "error_code", None) in _TRANSIENT_MLFLOW_CODES:
            return True
        text = f" {err} ".lower()
        if any(m in text for m in _TRANSIENT_MESSAGES):
            return True
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only on a transient error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # the result could not be read: do not guess, do not retry
            return False
    return isinstance(exc, BaseException) and is_transient(exc)
