"""No secret on any command line: every form of connection string hands its password to
libpq programs through the environment, and a real run is sampled from /proc."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import Db
from helpers import migration, run_cli

from dbsage.tools.connection import libpq_argv_env

FORMS = [
    ("postgresql://u:s3cr%40t@h:5432/d?sslmode=disable",
     "postgresql://u@h:5432/d?sslmode=disable", "s3cr@t"),
    ("postgresql://u@h/d?password=s3cret&sslmode=require",
     "postgresql://u@h/d?sslmode=require", "s3cret"),
    ("host=/tmp port=5432 user=postgres password=s3cret dbname=x",
     "host=/tmp port=5432 user=postgres dbname=x", "s3cret"),
    ("host=/tmp password='s3 cr\\'et' dbname='my db'", "host=/tmp dbname='my db'", "s3 cr'et"),
    ("postgresql://u@/d?host=/tmp/s", "postgresql://u@/d?host=/tmp/s", None),
]


@pytest.mark.parametrize(("given", "argv", "password"), FORMS)
def test_every_form_moves_its_password_to_the_environment(given: str, argv: str,
                                                           password: str | None) -> None:
    shown, env = libpq_argv_env(given, {})
    assert shown == argv
    assert env.get("PGPASSWORD") == password
    assert password is None or password not in shown


def _cmdlines() -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return out


@pytest.mark.parametrize("form", ["url_user", "url_query", "keyvalue"])
def test_no_child_process_ever_shows_the_password(db18: Db, project: Path, form: str) -> None:
    secret = f"Sekr3t{form}"
    socket = db18.server.socket_dir
    conninfo = {
        "url_user": f"postgresql://postgres:{secret}@/{db18.name}?host={socket}",
        "url_query": f"postgresql://postgres@/{db18.name}?host={socket}&password={secret}",
        "keyvalue": f"host={socket} user=postgres password={secret} dbname={db18.name}",
    }[form]
    path = migration(project, "20250101000000_t.sql", "create table public.t (id int);\n")
    seen: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.extend(c for c in _cmdlines() if secret in c and "pytest" not in c)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = run_cli("apply", str(path), "--mode", "yolo", "--rollback-script", "--db",
                      conninfo, cwd=project)
        plan = run_cli("plan", str(path), "--db", conninfo, cwd=project)
    finally:
        done.set()
        sampler.join()
    assert out.returncode == 0, out.stdout + out.stderr
    assert plan.returncode in (0, 4, 6), plan.stdout + plan.stderr
    # The dbsage process itself has it in argv (the user typed it); no child may.
    assert [c for c in seen if "bin/dbsage" not in c] == []
    assert secret not in out.stdout + out.stderr + plan.stdout + plan.stderr
    assert not any(secret in p.read_text(errors="replace")
                   for p in project.rglob("*") if p.is_file())
