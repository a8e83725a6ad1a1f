#!/usr/bin/env python3
"""Runs a command as a child subreaper and stops what it leaves behind.

Usage: reap.py COMMAND [ARGS...]

Environment: REAP_TIMEOUT, seconds the command may run (default 3000). Past it, the
processes still running are listed and everything is stopped, so a hung test ends the run
red with a list of what was running, well before CI's own limit.

The test suite starts real servers (etcd, PostgreSQL, Chromium, the agent itself). A test
that panics before its handles are dropped, or a server that daemonises, would leave a
process running after `cargo test` returns. Such a process keeps the test run's stdout
open, so whoever reads that output (CI) waits for an end of file that never comes.

This wrapper marks itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every
process the command starts, even one whose parent died, stays its descendant. When the
command exits, the wrapper lists the descendants still alive, prints each (PID and command
line) as a leak, sends them SIGTERM, then SIGKILL after a grace period, reaps them, and
exits with the command's own status. It only ever signals its own descendants, found by
parentage in /proc, never processes found by name.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 3.0


def children_of(pid):
    """PIDs whose parent is `pid`, read from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def descendants(pid):
    """Every live descendant of `pid`, parents before children."""
    seen, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in seen:
                seen.append(child)
                todo.append(child)
    return seen


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(
            f"reap.py: prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}",
            file=sys.stderr,
        )
        return 2
    limit = float(os.environ.get("REAP_TIMEOUT", "3000"))
    child = subprocess.Popen(sys.argv[1:])
    try:
        status = child.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        print(
            f"reap.py: the command ran past {limit:.0f} s (REAP_TIMEOUT); still running:",
            file=sys.stderr,
        )
        for pid in descendants(os.getpid()):
            print(f"reap.py:   {pid} {cmdline(pid)}", file=sys.stderr)
        child.terminate()
        try:
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        status = 124
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        status = child.wait()
    reap_zombies()
    left = [p for p in descendants(os.getpid()) if p != child.pid]
    if left:
        print(f"reap.py: {len(left)} process(es) outlived the command; stopping them:", file=sys.stderr)
        for pid in left:
            print(f"reap.py:   {pid} {cmdline(pid)}", file=sys.stderr)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            reap_zombies()
            if not descendants(os.getpid()):
                break
            time.sleep(0.05)
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10.0
        while descendants(os.getpid()) and time.monotonic() < deadline:
            reap_zombies()
            time.sleep(0.05)
        reap_zombies()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
