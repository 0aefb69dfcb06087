"""The `evedb` command line: click commands only, the logic lives in the library."""
