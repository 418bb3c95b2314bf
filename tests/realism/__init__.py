"""Realism fixtures: Supabase-shaped migration sets (see sets.py)."""

from realism.sets import SETS, RealismSet, psql_command

__all__ = ["SETS", "RealismSet", "psql_command"]
