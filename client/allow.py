"""The programs a client will run, when it was started with an allow-list.

An entry without a slash names a program found on the client's own PATH (``sleep``); an
entry with a slash is a path (``/opt/lab/bin/sim``). A request's program is resolved the
way it will be executed (``client.spawn.find_program``: the client's PATH, or the folder
the process starts in) and the real path of that file, symbolic links followed, must be
the real path of an entry, started by that entry's name (its last component).

With a list in force, two more things hold:
- a command for ``run`` must be one simple command (no pipes, redirections, ``;``, ``$`` or
  backquotes), because a shell line could start anything; it is started without a shell;
- a request may not set an environment variable that changes what a listed program loads
  or runs (``REFUSED_ENVIRONMENT``).
The folder a process starts in lies inside the client's root for every request, list or
not (``Sandbox.folder``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from client.spawn import find_program
from common.errors import CorralError, ErrorCode
from common.jobs import JOB_VARIABLES

SHELL_SYNTAX = set(";|&$`<>(){}\n\\*?[]~")

# Variables a request may not set under an allow-list: each makes a listed program load or
# run code it names. A deny-list can never be complete (any program may read any variable),
# which is why the README promises only what is written there.
REFUSED_ENVIRONMENT = (
    # the dynamic loader and libc: libraries to preload, audit or search; tunables;
    # character-set converters and message catalogues (format strings) loaded from a path
    "LD_*", "DYLD_*", "GLIBC_TUNABLES", "MALLOC_*", "GCONV_PATH", "LOCPATH", "NLSPATH",
    "TEXTDOMAINDIR",
    # where a bare command name is looked up, by shells and by execvp in the child
    "PATH",
    # shells: start-up files, exported functions, options, word splitting, trace prompts,
    # where functions and loadable built-ins are found
    "ENV", "BASH_ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "IFS", "PS4",
    "PROMPT_COMMAND", "ZDOTDIR", "SHELL", "FPATH", "BASH_LOADABLES_PATH",
    # interpreters' module paths, start-up files and options
    "PYTHON*", "PERL*", "RUBY*", "GEM_*", "NODE_*", "LUA_*", "TCLLIBPATH", "PHPRC",
    "PHP_INI_SCAN_DIR", "CLASSPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS", "R_PROFILE*", "R_ENVIRON*", "R_LIBS*", "DOTNET_*", "CORECLR_*",
    "COMPlus_*", "TCL_LIBRARY", "TK_LIBRARY", "ERL_*", "AWKPATH", "GUILE_*",
    # compilers: where they find the programs they run in turn
    "GCC_EXEC_PREFIX", "COMPILER_PATH", "RUSTC_WRAPPER", "CARGO_*",
    # plug-in and engine folders of common libraries
    "OPENSSL_*", "GIO_*", "GTK_*", "GST_PLUGIN_*", "QT_PLUGIN_PATH", "LIBGL_DRIVERS_PATH",
    "SASL_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH", "GDK_PIXBUF_MODULE*", "VK_*",
    "__EGL_VENDOR_LIBRARY_*", "LIBVA_DRIVERS_PATH", "GSS_MECH_CONFIG", "KRB5_CONFIG",
    "PKCS11_*",
    # tools that start a helper named in the environment, or read commands from it
    "EDITOR", "VISUAL", "PAGER", "MANPAGER", "LESSOPEN", "LESSCLOSE", "BROWSER",
    "SSH_ASKPASS", "SUDO_ASKPASS", "GIT_*", "VIMINIT", "EXINIT", "MYVIMRC", "MAKEFLAGS",
    "MAKEFILES", "RSYNC_RSH", "RSYNC_CONNECT_PROG", "CVS_RSH", "SYSTEMD_PAGER",
    "SYSTEMD_EDITOR", "HGRCPATH",
    # options read from the environment that can name a command to run (tar's
    # --to-command and --checkpoint-action=exec, less's +!, gzip's and zip's options)
    "TAR_OPTIONS", "LESS", "GZIP", "ZIPOPT", "UNZIP",
    # where programs find their configuration files, which may hold commands
    "HOME", "XDG_CONFIG_*", "XDG_DATA_*",
)
_REFUSED = re.compile("|".join(fnmatch.translate(p) for p in REFUSED_ENVIRONMENT))
# Locale names with a slash are paths from which libc loads locale data and catalogues.
_LOCALE = re.compile(r"LANG|LANGUAGE|LC_[A-Z_]+")


class NotAllowed(CorralError):
    code = ErrorCode.PERMISSION


def check_environment_names(env: dict[str, str]) -> None:
    """Names and values the kernel can carry at all (any client, list or not)."""
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise CorralError(f"bad environment entry {name!r}", ErrorCode.BAD_REQUEST)
        if name in JOB_VARIABLES:
            raise CorralError(f"{name} is set by the client for each process of a job; a "
                              "request may not set it", ErrorCode.BAD_REQUEST)


class AllowList:
    def __init__(self, entries: list[str], node: str) -> None:
        self.node = node
        self.names = {entry for entry in entries if "/" not in entry}
        # A relative path entry is taken from the folder the client was started in.
        self.paths = {os.path.abspath(entry) for entry in entries if "/" in entry}

    @classmethod
    def from_options(cls, allow: list[str], allow_file: Path | None, node: str
                     ) -> AllowList | None:
        entries = list(allow)
        if allow_file is not None:
            for line in allow_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    entries.append(line)
        return cls(entries, node) if entries or allow_file is not None else None

    def _allowed(self) -> set[tuple[str, str]]:
        """(real path, name it is started by) of every entry. The name counts as well as
        the file: a multi-call program (busybox, vim and rvim, a script that reads ``$0``)
        is another program under each of its names, and a link of another name to a listed
        file must not pick one. Looked up at each check, so a program installed (or an
        alternative switched) later is found."""
        found = ((find_program(name, Path("/")), name) for name in self.names)
        return ({(os.path.realpath(path), os.path.basename(path)) for path in self.paths}
                | {(os.path.realpath(path), name) for path, name in found if path is not None})

    def check(self, name: str, program: str | None) -> None:
        """``program`` is where ``name`` resolved (None: nothing there); refuse unless its
        real path is that of an entry started by the same name."""
        if (program is None
                or (os.path.realpath(program), os.path.basename(name)) not in self._allowed()):
            raise NotAllowed(f"program {name!r} is not allowed on {self.node}")

    def check_environment(self, env: dict[str, str]) -> None:
        refused = sorted(_refused(env.items()))
        if refused:
            raise NotAllowed(f"environment variables that change what runs are refused on "
                             f"{self.node} (it has an allow-list): {', '.join(refused)}")

    def command_argv(self, command: str) -> list[str]:
        """The argv of a simple command, or NotAllowed saying why not (the program itself
        is checked once resolved)."""
        if any(ch in SHELL_SYNTAX for ch in command):
            raise NotAllowed(f"only simple commands may run on {self.node} (it has an "
                             "allow-list): no pipes, redirections, ; or $")
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise CorralError(f"cannot parse command: {exc}", ErrorCode.BAD_REQUEST) from None
        if not argv:
            raise CorralError("empty command", ErrorCode.BAD_REQUEST)
        return argv


def _refused(entries: Iterable[tuple[str, str]]) -> Iterable[str]:
    for name, value in entries:
        if _REFUSED.match(name) or (_LOCALE.fullmatch(name) and "/" in value):
            yield name
