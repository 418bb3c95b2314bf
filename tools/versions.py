"""The versions psycopg looks up when it is imported, read from the installed folders' names.

`import psycopg` runs `importlib.metadata.version("psycopg")` and, for its C build,
`importlib.metadata.version("psycopg-binary")`: importing importlib.metadata (with zipfile
and the email package to parse METADATA) and the two lookups cost ~20 ms of every run's
start-up, a third of the psycopg import, for a string psycopg only shows in messages. The
installer names each distribution's folder `<name>-<version>.dist-info` beside the package,
so `skip_version_lookups` serves the modules `psycopg.version` and `psycopg_binary.version`
with the version in that name, before psycopg is imported. Where no such folder is found
(another kind of installation), psycopg looks its versions up itself, as before.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

#: The modules served, and the distribution whose version each holds as `__version__`.
VERSION_MODULES = {"psycopg.version": "psycopg", "psycopg_binary.version": "psycopg_binary"}


class _VersionModules:
    """A meta path finder and loader for VERSION_MODULES only; it leaves sys.meta_path once
    it has served them all."""

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = versions  # module name -> version

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname not in self.versions:
            return None
        # duck-typed Loader: importlib.abc is not imported for this
        return ModuleSpec(fullname, cast("Loader", self), origin="dist-info folder name")

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__version__ = self.versions.pop(module.__name__)  # type: ignore[attr-defined]
        module.__doc__ = f"{module.__name__.split('.')[0]}'s version, from its dist-info folder."
        if not self.versions and self in sys.meta_path:
            sys.meta_path.remove(self)


def installed_versions(site: str) -> dict[str, str]:
    """The version of each distribution of VERSION_MODULES installed in the folder `site`,
    from its `<name>-<version>.dist-info` folder (none for a distribution without one)."""
    wanted = set(VERSION_MODULES.values())
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir(site)
    except OSError:
        return {}
    for name in names:
        if not name.endswith(".dist-info"):
            continue
        dist, _, version = name.removesuffix(".dist-info").partition("-")
        if dist in wanted and version:
            found.setdefault(dist, []).append(version)
    # two folders of one distribution (one left behind): which one is installed is unclear
    return {dist: versions[0] for dist, versions in found.items() if len(versions) == 1}


def skip_version_lookups() -> None:
    """Before psycopg is imported: serve its version modules from the dist-info folder names
    (see the module's docstring). Does nothing once psycopg is imported, or when it is not
    installed as one folder beside its dist-info."""
    if "psycopg" in sys.modules or any(isinstance(f, _VersionModules) for f in sys.meta_path):
        return
    from importlib.util import find_spec

    try:
        spec = find_spec("psycopg")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
        return
    site = os.path.dirname(os.path.dirname(spec.origin))
    versions = installed_versions(site)
    served = {module: versions[dist] for module, dist in VERSION_MODULES.items()
              if dist in versions}
    if served:
        sys.meta_path.insert(0, _VersionModules(served))
