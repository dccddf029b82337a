"""Aliasing support: ``sys.modules["asyncpg"] = asyncpg_rs`` gives one module per submodule.

Without this, ``import asyncpg.connection`` under such an alias would find
``asyncpg_rs/connection.py`` through the package's ``__path__`` and execute it a second time as
a new module named ``asyncpg.connection``, with its own ``Connection`` class. Libraries that
patch asyncpg's classes by module path (OpenTelemetry's instrumentation wraps
``asyncpg.connection.Connection.fetch``) would then patch a copy nobody uses. The finder below
answers for ``<alias>.<sub>`` whenever ``sys.modules[<alias>]`` is this package, and hands out
the already-imported ``asyncpg_rs.<sub>`` module object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

PACKAGE = __name__.rpartition(".")[0]


class _ForwardingModule(types.ModuleType):
    """The placeholder the import system holds for ``<alias>.<sub>`` while loading it.

    Import hooks see it: New Relic's post-import hooks patch the module object the loader was
    handed (``asyncpg.protocol.Protocol``, ``asyncpg.connect_utils._connect_addr``), so its
    attribute reads and writes go to the real ``asyncpg_rs.<sub>``; only the import
    machinery's own dunder attributes stay on the placeholder.
    """

    def __init__(self, name, real):
        super().__init__(name)
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        if name.startswith("__") and name.endswith("__"):
            super().__setattr__(name, value)
        else:
            setattr(self._real, name, value)

    def __delattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            super().__delattr__(name)
        else:
            delattr(self._real, name)


class _SubmoduleLoader(importlib.abc.Loader):
    def __init__(self, real_name: str):
        self.real_name = real_name

    def create_module(self, spec):
        return _ForwardingModule(spec.name, importlib.import_module(self.real_name))

    def exec_module(self, module):
        # importlib returns whatever sys.modules holds under the name after exec_module
        sys.modules[module.__name__] = module._real


class AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves ``<alias>.<sub>`` to ``asyncpg_rs.<sub>`` for any alias of this package."""

    def find_spec(self, fullname, path=None, target=None):
        head, dot, rest = fullname.partition(".")
        if not dot or head == PACKAGE:
            return None
        package = sys.modules.get(PACKAGE)
        if package is None or sys.modules.get(head) is not package:
            return None
        real_name = f"{PACKAGE}.{rest}"
        try:
            if importlib.util.find_spec(real_name) is None:
                return None
        except (ImportError, ValueError):
            # a submodule of something we do not have (say, a harness package another
            # finder serves under the alias): not ours to answer
            return None
        return importlib.machinery.ModuleSpec(fullname, _SubmoduleLoader(real_name))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
