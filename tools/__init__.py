"""dbsage's I/O layer: SQL, subprocesses and files (docs/architecture.md)."""

from dbsage.tools.versions import skip_version_lookups

skip_version_lookups()
