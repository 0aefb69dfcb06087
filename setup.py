"""Builds evedb's two compiled parts, the clock VFS (evedb/_clock.c) and the token's hashing
(evedb/_tokenhash.c: a changeset's page deltas, the replies' bytes); everything else is in
pyproject.toml.  Both are optional: without a C compiler (or SQLite's headers, which the clock
needs) evedb installs anyway and falls back to the same code written in Python (the clock VFS in evedb/storage.py,
the hashing in evedb/merkle.py and evedb/codec.py)."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("evedb._clock", ["evedb/_clock.c"], optional=True),
    Extension("evedb._tokenhash", ["evedb/_tokenhash.c"], libraries=["dl"], optional=True),
])
