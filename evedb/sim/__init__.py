"""Seeded simulator driving the protocol core (to come)."""
