"""The exception hierarchy: asyncpg's names, bases and SQLSTATEs, and PostgresMessage.new()."""

import pickle

import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


def test_same_names_bases_and_sqlstates_as_asyncpg():
    ref = pytest.importorskip("asyncpg.exceptions")
    assert set(exceptions.__all__) == set(ref.__all__)
    for name in ref.__all__:
        ours, theirs = getattr(exceptions, name), getattr(ref, name)
        assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in theirs.__mro__], name
        assert getattr(ours, "sqlstate", None) == getattr(theirs, "sqlstate", None), name


def test_top_level_reexports():
    for name in exceptions.__all__:
        assert getattr(asyncpg_rs, name) is getattr(exceptions, name)


def test_new_maps_sqlstate_and_fields():
    fields = {
        "S": "ERROR",
        "V": "ERROR",
        "C": "23505",
        "M": "duplicate key",
        "D": "Key (a)=(1) already exists.",
        "H": "try another",
        "s": "public",
        "t": "tbl",
        "n": "tbl_pkey",
        "F": "nbtinsert.c",
        "L": "664",
        "R": "_bt_check",
    }
    e = exceptions.PostgresError.new(fields, query="INSERT ...")
    assert type(e) is exceptions.UniqueViolationError
    assert isinstance(e, exceptions.IntegrityConstraintViolationError)
    assert e.sqlstate == "23505" and e.constraint_name == "tbl_pkey"
    assert e.table_name == "tbl" and e.schema_name == "public"
    assert e.server_source_line == "664" and e.query == "INSERT ..."
    assert str(e) == "duplicate key\nDETAIL:  Key (a)=(1) already exists.\nHINT:  try another"
    assert e.as_dict()["detail"] == "Key (a)=(1) already exists."
    assert "query" not in e.as_dict()
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is type(e) and again.as_dict() == e.as_dict() and again.query == e.query


def test_unknown_and_fatal_codes():
    assert type(exceptions.PostgresError.new({"C": "ZZ999", "M": "x"})) is (
        exceptions.UnknownPostgresError
    )
    assert issubclass(exceptions.UnknownPostgresError, exceptions.FatalPostgresError)
    e = exceptions.PostgresError.new({"C": "57P01", "M": "terminating", "S": "FATAL"})
    assert type(e) is exceptions.AdminShutdownError


def test_log_messages():
    notice = exceptions.PostgresLogMessage.new({"C": "00000", "M": "hello", "S": "NOTICE"})
    assert type(notice) is exceptions.PostgresLogMessage
    assert str(notice) == "PostgresLogMessage: hello"
    warn = exceptions.PostgresLogMessage.new({"C": "01000", "M": "careful", "S": "WARNING"})
    assert type(warn) is exceptions.PostgresWarning and isinstance(warn, Warning)


def test_client_side_classes():
    assert issubclass(exceptions.ClientConfigurationError, ValueError)
    assert issubclass(exceptions.ClientConfigurationError, exceptions.InterfaceError)
    assert issubclass(exceptions.ProtocolError, exceptions.InternalClientError)
    assert issubclass(exceptions.InterfaceWarning, UserWarning)
    e = exceptions.InterfaceError("bad thing", detail="d", hint="h")
    assert str(e) == "bad thing\nDETAIL:  d\nHINT:  h"
    assert issubclass(exceptions.InvalidCachedStatementError, exceptions.FeatureNotSupportedError)
