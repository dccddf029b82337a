"""The roots of asyncpg_rs's exception hierarchy (same names and bases as asyncpg's)."""

from __future__ import annotations

import typing

__all__ = (
    "PostgresError",
    "FatalPostgresError",
    "UnknownPostgresError",
    "InterfaceError",
    "InterfaceWarning",
    "PostgresLogMessage",
    "ClientConfigurationError",
    "InternalClientError",
    "OutdatedSchemaCacheError",
    "ProtocolError",
    "UnsupportedClientFeatureError",
    "TargetServerAttributeNotMatched",
    "UnsupportedServerFeatureError",
)

# ErrorResponse / NoticeResponse field codes -> attribute names.
FIELDS = {
    "S": "severity",
    "V": "severity_en",
    "C": "sqlstate",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "context",
    "s": "schema_name",
    "t": "table_name",
    "c": "column_name",
    "d": "data_type_name",
    "n": "constraint_name",
    "F": "server_source_filename",
    "L": "server_source_line",
    "R": "server_source_function",
}

# Errors about prepared statements that, in practice, mean a transaction-mode pooler moved
# the session to another server connection between Parse and Bind.
_PGBOUNCER_CODES = ("42P05", "26000")
_PGBOUNCER_HINT = (
    "If you use pgbouncer (or another pooler) with pool_mode 'transaction' or 'statement', "
    "prepared statements do not survive between transactions: connect with "
    "statement_cache_size=0, or use pool_mode 'session'."
)

# sqlstate -> class, filled in as the generated classes are defined
_SQLSTATE_CLASSES: dict = {}


def _detail_lines(message, detail, hint):
    text = message or ""
    if detail:
        text += f"\nDETAIL:  {detail}"
    if hint:
        text += f"\nHINT:  {hint}"
    return text


class PostgresMessage:
    """A message from the server: an error, a warning or a notice, with its fields."""

    severity: str | None = None
    severity_en: str | None = None
    # every message the server sends has one; only the base classes' own value is None
    sqlstate: str = None  # type: ignore[assignment]
    message: str | None = None
    detail: str | None = None
    hint: str | None = None
    position: str | None = None
    internal_position: str | None = None
    internal_query: str | None = None
    context: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    column_name: str | None = None
    data_type_name: str | None = None
    constraint_name: str | None = None
    server_source_filename: str | None = None
    server_source_line: str | None = None
    server_source_function: str | None = None
    # the query that failed (set by new(); not a server field)
    query: str | None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("sqlstate")
        if code and code not in _SQLSTATE_CLASSES:
            _SQLSTATE_CLASSES[code] = cls

    @classmethod
    def _class_for(cls, sqlstate, severity):
        return _SQLSTATE_CLASSES.get(sqlstate)

    @classmethod
    def new(cls, fields: dict[str, str], query: str | None = None) -> typing.Self:
        """Build (not raise) the message object for server ``fields`` (keyed by the
        protocol's one-letter field codes)."""
        attrs = {FIELDS[k]: v for k, v in fields.items() if k in FIELDS}
        severity = attrs.get("severity_en") or attrs.get("severity")
        target = cls._class_for(attrs.get("sqlstate"), severity) or cls
        obj = target._construct(attrs)
        obj.query = query
        if obj.sqlstate in _PGBOUNCER_CODES and not obj.hint:
            obj.hint = _PGBOUNCER_HINT
        return obj

    @classmethod
    def _construct(cls, attrs):
        if issubclass(cls, BaseException):
            obj = cls(attrs.get("message"))
        else:
            obj = cls.__new__(cls)
        for name, value in attrs.items():
            setattr(obj, name, value)
        return obj

    def as_dict(self) -> dict[str, str]:
        """The message's fields as a dict (only those the server sent)."""
        out = {}
        for name in FIELDS.values():
            value = getattr(self, name, None)
            if value is not None:
                out[name] = value
        return out


class PostgresError(PostgresMessage, Exception):
    """Base class for all errors reported by the PostgreSQL server."""

    @classmethod
    def _class_for(cls, sqlstate, severity):
        found = _SQLSTATE_CLASSES.get(sqlstate)
        if found is not None and issubclass(found, PostgresError):
            return found
        return UnknownPostgresError

    def __str__(self):
        if self.message is None:
            return super().__str__()
        return _detail_lines(self.message, self.detail, self.hint)

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls, args, state):
    obj = cls(*args)
    obj.__dict__.update(state)
    return obj


class FatalPostgresError(PostgresError):
    """A fatal error: the server closes the connection."""


class UnknownPostgresError(FatalPostgresError):
    """An error with a SQLSTATE this version of asyncpg_rs does not know."""


class InterfaceMessage:
    """Mixin for client-side messages with optional DETAIL and HINT."""

    def __init__(self, *, detail: str | None = None, hint: str | None = None) -> None:
        self.detail = detail
        self.hint = hint

    def __str__(self):
        msg = self.args[0] if self.args else ""
        return _detail_lines(str(msg), self.detail, self.hint)


class InterfaceError(InterfaceMessage, Exception):
    """The driver's API was misused (closed connection, wrong state, bad argument count...)."""

    def __init__(self, msg: str, *, detail: str | None = None, hint: str | None = None) -> None:
        InterfaceMessage.__init__(self, detail=detail, hint=hint)
        Exception.__init__(self, msg)

    def with_msg(self, msg: str) -> typing.Self:
        return type(self)(msg, detail=self.detail, hint=self.hint).with_traceback(
            self.__traceback__
        )


class ClientConfigurationError(InterfaceError, ValueError):
    """Invalid connection configuration (DSN, sslmode, port, ...), found before any I/O."""


class InterfaceWarning(InterfaceMessage, UserWarning):
    """A warning about how the driver's API is used."""

    def __init__(self, msg: str, *, detail: str | None = None, hint: str | None = None) -> None:
        InterfaceMessage.__init__(self, detail=detail, hint=hint)
        UserWarning.__init__(self, msg)


class UnsupportedClientFeatureError(InterfaceError):
    """The feature is not supported by the driver."""


class UnsupportedServerFeatureError(InterfaceError):
    """The feature is not supported by the server."""


class InternalClientError(Exception):
    """An inconsistency inside the driver; the connection is closed."""


class ProtocolError(InternalClientError):
    """The server sent something that does not follow the protocol."""


class TargetServerAttributeNotMatched(InternalClientError):
    """No server matched ``target_session_attrs``."""


class OutdatedSchemaCacheError(InternalClientError):
    """A type changed on the server after its codec was cached: reload the schema state."""

    def __init__(
        self,
        msg: str,
        *,
        schema: str | None = None,
        data_type: str | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(msg)
        self.schema_name = schema
        self.data_type_name = data_type
        self.position = position


class PostgresLogMessage(PostgresMessage):
    """A NOTICE, WARNING or other non-error message from the server."""

    @classmethod
    def _class_for(cls, sqlstate, severity):
        found = _SQLSTATE_CLASSES.get(sqlstate)
        if found is not None and issubclass(found, PostgresLogMessage):
            return found
        if severity == "WARNING":
            # a WARNING with a SQLSTATE outside the warning classes is still a warning
            return _SQLSTATE_CLASSES.get("01000", PostgresLogMessage)
        return PostgresLogMessage

    @classmethod
    def _construct(cls, attrs):
        obj = cls.__new__(cls)
        if issubclass(cls, BaseException):
            BaseException.__init__(obj, attrs.get("message"))
        for name, value in attrs.items():
            setattr(obj, name, value)
        return obj

    def __str__(self):
        return f"{type(self).__name__}: {self.message}"
