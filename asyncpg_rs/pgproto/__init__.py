"""asyncpg's ``asyncpg.pgproto`` namespace, for libraries that import names from it.

asyncpg ships its binary codecs as a Cython package of this name; libraries reach into it for
the UUID class (Piccolo, SQLAlchemy) and the geometric types. Here the codecs live in the Rust
core, and this package only gives those public names.
"""
