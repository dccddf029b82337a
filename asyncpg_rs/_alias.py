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

PACKAGE = __name__.rpartition(".")[0]


class _SubmoduleLoader(importlib.abc.Loader):
    def __init__(self, real_name: str):
        self.real_name = real_name

    def create_module(self, spec):
        return None  # a placeholder; exec_module swaps the real module in

    def exec_module(self, module):
        # importlib returns whatever sys.modules holds under the name after exec_module
        sys.modules[module.__name__] = importlib.import_module(self.real_name)


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
