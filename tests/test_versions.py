"""psycopg's versions come from the dist-info folder names, not importlib.metadata (start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dbsage.tools.versions import installed_versions

PROBE = """
import json, sys
{pre}
import psycopg, psycopg_binary
loaded = 'importlib.metadata' in sys.modules
from importlib.metadata import version
print(json.dumps({{"metadata_loaded": loaded,
                   "psycopg": [psycopg.__version__, version("psycopg")],
                   "binary": [psycopg_binary.__version__, version("psycopg-binary")],
                   "module": psycopg.version.__version__}}))
"""


def _probe(pre: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(pre=pre)], capture_output=True,
                         text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_importing_psycopg_after_dbsage_tools_skips_importlib_metadata() -> None:
    seen = _probe("import dbsage.tools")
    assert seen["metadata_loaded"] is False
    psycopg_versions, binary_versions = seen["psycopg"], seen["binary"]
    assert isinstance(psycopg_versions, list) and isinstance(binary_versions, list)
    assert psycopg_versions[0] == psycopg_versions[1] == seen["module"]  # what metadata says
    assert binary_versions[0] == binary_versions[1]


def test_the_probe_would_notice_importlib_metadata() -> None:
    assert _probe("")["metadata_loaded"] is True  # psycopg alone looks its versions up


def test_installed_versions_reads_dist_info_names(tmp_path: Path) -> None:
    for name in ("psycopg-3.2.1.dist-info", "psycopg_binary-3.2.1.dist-info", "psycopg",
                 "rich-13.0.dist-info", "psycopg_pool-3.2.0.dist-info"):
        (tmp_path / name).mkdir()
    assert installed_versions(str(tmp_path)) == {"psycopg": "3.2.1", "psycopg_binary": "3.2.1"}


def test_two_folders_of_one_distribution_leave_its_lookup_to_psycopg(tmp_path: Path) -> None:
    for name in ("psycopg-3.2.1.dist-info", "psycopg-3.1.0.dist-info",
                 "psycopg_binary-3.2.1.dist-info"):
        (tmp_path / name).mkdir()
    assert installed_versions(str(tmp_path)) == {"psycopg_binary": "3.2.1"}
    assert installed_versions(str(tmp_path / "missing")) == {}
