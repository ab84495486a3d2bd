"""The top entries of a py-spy profile in its raw (collapsed stack) format: where the
samples were (self) and what was on the stack (total), per thread if asked.

    .venv/bin/py-spy record --pid PID --duration 10 --format raw --output prof.txt
    .venv/bin/python bench/profile_top.py prof.txt [--only corral-hub] [--top 15]

``bench/heartbeat_scale.py --profile FILE`` records the master this way over its window.
Samples in the event loop's own wait (``Hub.run``) are idle time as py-spy sees a C loop.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def summarise(path: Path, only: str | None, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    on_stack: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or (only is not None and only not in stack):
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            on_stack[frame] += count
    lines = [f"{total} samples" + (f" with {only!r}" if only else "")]
    for title, counter in (("self", own), ("total", on_stack)):
        lines.append(f"-- {title}")
        lines += [f"{100 * n / max(total, 1):5.1f} %  {name[:120]}"
                  for name, n in counter.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--only", help="only stacks that contain this text (a thread name)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarise(args.profile, args.only, args.top))


if __name__ == "__main__":
    main()
