"""Builds evedb's one compiled part, the clock VFS (evedb/_clock.c); everything else is in
pyproject.toml.  The extension is optional: without a C compiler or SQLite's headers evedb
installs anyway and falls back to the clock VFS written in Python (evedb/storage.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("evedb._clock", ["evedb/_clock.c"], optional=True)])
