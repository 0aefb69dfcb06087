"""TPC-W for evedb: schema, population, interactions as procedures, mixes, driver, report.

Database side (tpcw.md sections 1-4, 6):
- `schema.sql`: the ten tables and their indexes (package data);
- `populate.populate(dsn_or_path, items, ebs, seed=...)`: the section 2 load, through the DB-API
  (`evedb tpcw populate DSN --items N --ebs N`);
- `procedures`: the database transactions of the 14 interactions as `@evedb.procedure`s
  (`tpcw_home`, `tpcw_buy_confirm`, ...), with their mixer rules in mixer_rules/tpcw.toml;
- `random_helpers`: DigSyl, NURand, a-/n-strings and the fixed lists (subjects, countries, ...).
"""
