"""SIGHUP on the master: re-read the token file and reopen the log file, without stopping.

Connections already made stay up (the token is used only to open one); every connection
from then on must prove the new token. The work is done in a thread of its own, not in the
signal handler, which may interrupt the main thread while it holds the log's lock.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

from common import auth
from common.errors import CorralError
from common.logfiles import reopen_log_files
from common.quiet_threads import quiet_thread
from master.api import MasterAPI

log = logging.getLogger("corral.master")


def install(api: MasterAPI, token_path: Path) -> Callable[[], None]:
    """Handle SIGHUP from now on; returns what a handler should call, for the console,
    whose prompt loop installs a SIGHUP handler of its own."""
    def on_hangup() -> None:
        quiet_thread(reload, "sighup", (api, token_path)).start()

    signal.signal(signal.SIGHUP, lambda _signum, _frame: on_hangup())
    return on_hangup


def reload(api: MasterAPI, token_path: Path) -> None:
    reopened = reopen_log_files(logging.getLogger("corral"))
    try:
        token = auth.read_token(token_path)
    except CorralError as exc:
        log.warning("SIGHUP: %s; the token in use stays", exc.message)
        return
    changed = api.set_token(token)
    log.info("SIGHUP: token re-read from %s (%s); log files reopened: %s", token_path,
             "changed: new connections must prove the new token" if changed else "unchanged",
             ", ".join(reopened) or "none")
