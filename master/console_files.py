"""Console commands for files: copy, pull, remove."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import cmd2
from cmd2 import Cmd2ArgumentParser, with_argparser

from master.console_args import ConsoleCommands, add_nodeset
from master.front import render
from master.transfers import Progress

PROGRESS_AFTER = 0.5  # seconds before a transfer shows a progress line


class FileCommands(ConsoleCommands):
    copy_parser = Cmd2ArgumentParser(description="Copy local files to nodes.")
    add_nodeset(copy_parser)
    copy_parser.add_argument("-r", dest="recursive", action="store_true", help="folders too")
    copy_parser.add_argument("-L", dest="follow", action="store_true",
                             help="follow links inside folders (copy what they point to)")
    copy_parser.add_argument("sources", nargs="+", metavar="SRC",
                             completer=cmd2.Cmd.path_complete)
    copy_parser.add_argument("dest", metavar="DEST",
                             help="path on the nodes, relative to their work folder")

    @with_argparser(copy_parser)
    def do_copy(self, args: argparse.Namespace) -> None:
        """Copy local files (folders with -r) to DEST on every target node, as cp does."""
        with self._progress() as show:
            group = self.app.api.copy(args.nodeset, args.sources, args.dest, args.recursive, show,
                                      args.follow)
        self._report_transfer(group)

    pull_parser = Cmd2ArgumentParser(description="Fetch files from nodes.")
    add_nodeset(pull_parser)
    pull_parser.add_argument("-L", dest="follow", action="store_true",
                             help="follow links inside folders (copy what they point to)")
    pull_parser.add_argument("remote", nargs="+", metavar="REMOTE_PATH",
                             help="on the nodes; ?HOST becomes the node's name")
    pull_parser.add_argument("local_dir", metavar="LOCAL_DIR", completer=cmd2.Cmd.path_complete,
                             help="each node's files land in LOCAL_DIR/NODE/")

    @with_argparser(pull_parser)
    def do_pull(self, args: argparse.Namespace) -> None:
        """Fetch files or folders from nodes into LOCAL_DIR/<node>/."""
        with self._progress() as show:
            group = self.app.api.pull(args.nodeset, args.remote, args.local_dir, show,
                                      args.follow)
        self._report_transfer(group)

    def _report_transfer(self, group: Any) -> None:
        self.app.last_result = group
        self.app.show(render.transfer_report(group))
        if group.errors:
            self.app.exit_code = 1

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Callable[[Progress], None]]:
        """A progress line on stderr, redrawn in place, for transfers that take a while."""
        shown = []
        terminal = sys.stderr.isatty()

        def show(progress: Progress) -> None:  # called on the hub thread
            if terminal and progress.elapsed >= PROGRESS_AFTER:
                sys.stderr.write("\r" + render.progress_line(progress) + "\x1b[K")
                sys.stderr.flush()
                shown.append(True)

        try:
            yield show
        finally:
            if shown:
                sys.stderr.write("\n")

    remove_parser = Cmd2ArgumentParser(description="Remove files on nodes.")
    add_nodeset(remove_parser)
    remove_parser.add_argument("-r", dest="recursive", action="store_true",
                               help="folders and everything in them")
    remove_parser.add_argument("paths", nargs="+", metavar="PATH",
                               help="relative to the work folder; ?HOST becomes the node's name")

    @with_argparser(remove_parser)
    def do_remove(self, args: argparse.Namespace) -> None:
        """Remove files (folders with -r) on nodes."""
        group = self.app.api.remove(args.nodeset, args.paths, args.recursive)
        self.app.last_result = group
        self.app.show(render.remove_report(group))
        if group.errors or not all(o.ok for r in group.results.values() for o in r):
            self.app.exit_code = 1
