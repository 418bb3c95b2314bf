"""The `dbsage` console entry point.

A plain invocation of a command (agent/front.py) runs at once, through the chat's grammar,
without importing typer; anything else goes to the typer app of agent/cli.py, which owns
help, completion and every usage error.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbsage.agent.grammar import CommandSpec


def main() -> None:
    """Console entry point."""
    from dbsage.agent.front import install_signal_handlers, kill_children, plain_invocation

    found = plain_invocation(sys.argv[1:])
    if found is None:
        from dbsage.agent.cli import main as typer_main

        typer_main()
        return
    install_signal_handlers()
    try:
        sys.exit(_run(*found))
    finally:
        kill_children()  # whatever ended the command, no child outlives it
        # The interpreter's teardown would still walk every object the run created (about
        # 50,000) in garbage-collection passes: ~40 ms on every command. Freezing them skips
        # those passes; atexit handlers and flushing run as usual.
        gc.freeze()


def _run(spec: CommandSpec, values: dict[str, Any]) -> int:
    """Run the command as typer's standalone mode would: an interrupt that escapes the
    command is "Aborted!" and exit 1, a closed pipe on the output exit 1, quietly."""
    import errno

    from dbsage.agent.front import execute

    try:
        return execute(spec, values)
    except (EOFError, KeyboardInterrupt):
        sys.stderr.write("\nAborted!\n")
        return 1
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = sys.stderr = _Quiet()
        return 1


class _Quiet:
    """Where output goes once the reader has gone: the interpreter's final flush finds
    nothing to write (no 'Broken pipe' traceback)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


if __name__ == "__main__":
    main()
