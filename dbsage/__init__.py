"""dbsage: Dara, the DB Sage. Safe PostgreSQL and Supabase migrations."""

__version__ = "0.1.0"
