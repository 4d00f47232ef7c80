"""The command-line interface (nothing in the library imports it)."""
