"""Jobs as both sides and every front end name them, and the environment of a job's
processes.

Every ``exec`` and ``run`` is a job: ``J12`` spans the processes it started on all its
nodes, each with a rank 0..N-1 (node order, then copy order). ``J12.3`` names the process
of rank 3. The client gives each process its place in the job through ``CORRAL_*``
variables that neither a request nor the master's global environment may set.
"""

from __future__ import annotations

import re

JOB_PREFIX = "J"
KEEP_JOBS = 1_000  # the newest jobs the master remembers; older ones are forgotten
MAX_JOB = 10**12
MAX_COPIES = 10_000  # of one program on one node in one exec (exec -n)
# Where ``script`` lands the scripts it runs, in a node's work folder; a client sweeps it
# at start (the master removes each script once its job ends, but not on a node that
# was away then).
SCRIPT_FOLDER = ".corral/scripts"
# [0-9], not \d: \d takes any script's digits, and J followed by an Arabic-Indic one
# would be J1.
_JOB = re.compile(r"J([0-9]{1,13})")
_MEMBER = re.compile(r"J([0-9]{1,13})\.([0-9]{1,9})")

# Set by the client for every process it starts; never taken from a request.
JOB_VARIABLES = ("CORRAL_NODE", "CORRAL_JOB", "CORRAL_RANK", "CORRAL_SIZE", "CORRAL_REF",
                 "CORRAL_SOCKET")

# POSIX: "names ... consist solely of uppercase letters, digits, and the underscore ...
# and do not begin with a digit"; lowercase letters are allowed as portable too.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_NAME = 256
MAX_ENV_VALUE = 64 * 1024
MAX_ENV_TOTAL = 1024 * 1024  # bytes of the global environment, names and values


def job_name(number: int) -> str:
    return f"{JOB_PREFIX}{number}"


def looks_like_job(word: str) -> bool:
    """A word meant as a job or a job member (``J12``, ``J12.3``, ``J``, ``Jx``), not a
    ``NODE:PID`` reference."""
    return word.startswith(JOB_PREFIX) and ":" not in word


def parse_job(word: str) -> tuple[int, int | None]:
    """``J12`` -> (12, None); ``J12.3`` -> (12, 3); ValueError saying why for anything
    else."""
    whole, member = _JOB.fullmatch(word), _MEMBER.fullmatch(word)
    if whole is None and member is None:
        raise ValueError(f"bad job {word!r}: expected J<number> (J12) or J<number>.<rank> "
                         "(J12.3)")
    match = whole or member
    assert match is not None
    number = int(match.group(1))
    if not 0 < number < MAX_JOB:
        raise ValueError(f"bad job {word!r}: job numbers are J1 to J{MAX_JOB - 1}")
    return number, None if member is None else int(member.group(2))


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an environment variable set by corral (None: it can)."""
    if "\0" in name:
        return f"bad environment name {name!r}: it holds a NUL byte"
    if not _ENV_NAME.fullmatch(name) or len(name) > MAX_ENV_NAME:
        return (f"bad environment name {name!r}: letters, digits and '_', not starting "
                f"with a digit, at most {MAX_ENV_NAME} characters")
    if name in JOB_VARIABLES:
        return f"{name} is set by the client for each process of a job; it cannot be set"
    return None


def env_value_problem(name: str, value: str) -> str | None:
    if "\0" in value:
        return f"the value of {name} holds a NUL byte"
    if len(value.encode("utf-8", "surrogateescape")) > MAX_ENV_VALUE:
        return f"the value of {name} is longer than {MAX_ENV_VALUE} bytes"
    return None


def env_entry_problem(name: str, value: str) -> str | None:
    return env_name_problem(name) or env_value_problem(name, value)


def env_size(entries: dict[str, str]) -> int:
    """Bytes an environment takes in a request frame (names, values, a few bytes of
    framing each)."""
    return sum(len(name.encode("utf-8", "surrogateescape"))
               + len(value.encode("utf-8", "surrogateescape")) + 8
               for name, value in entries.items())
