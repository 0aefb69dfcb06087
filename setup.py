"""Builds evedb's two compiled parts, the clock VFS (evedb/_clock.c) and the page deltas of a
changeset (evedb/_rowhash.c); everything else is in pyproject.toml.  Both are optional: without
a C compiler or SQLite's headers evedb installs anyway and falls back to the same code written
in Python (the clock VFS in evedb/storage.py, the row hashes in evedb/merkle.py)."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("evedb._clock", ["evedb/_clock.c"], optional=True),
    Extension("evedb._rowhash", ["evedb/_rowhash.c"], libraries=["dl"], optional=True),
])
