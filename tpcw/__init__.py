"""TPC-W for evedb: schema, population, interactions as procedures, mixes, driver, report."""
