#!/usr/bin/env python3
"""AMI test peer: a separate process that answers like the real Asterisk 21 recorded in
tests/ami/data/ami-transcript.txt, for lifeline's chaos tests (which SIGKILL it and start
it again on the same address). Python 3 standard library only.

It behaves as tests/common/fake_ami.rs does with its default configuration (users
`monitor`/`amisecret` with full rights and `readonly`/`readonlysecret` with read=system,
write=none): the banner on connect, `Permission denied` before login, `Authentication
failed` after a delay and then a close, `Challenge` (MD5) and both login forms, the
`FullyBooted` event unless `Events: off`, `Ping` -> `Pong` with a timestamp, `CoreStatus`,
`Command` (`core show version`), unknown and missing actions, `Logoff` and a close, and
the silent close of a connection that has not logged in within `authtimeout`.
tests/ami/transcript.rs replays the transcript against this process byte for byte.
(Not here: fake_ami's TLS listener and its "chatty" mode.)

Environment:
  HOST                 address to listen on (default 127.0.0.1)
  PORT                 port (default 0: any free port)
  CHALLENGE            fixed MD5 challenge (default: 9 random digits per request)
  AUTHTIMEOUT_MS       manager.conf authtimeout in ms (default 10000, as recorded)
  AUTH_FAIL_DELAY_MS   delay before `Authentication failed` (default 1000, as recorded)

Prints `listening <port>` on stdout once it accepts connections.
"""

import asyncio
import hashlib
import os
import random
import socket
import sys
import time

VERSION = "10.0.0"
# name -> (secret, read=system, write=command)
USERS = {
    "monitor": ("amisecret", True, True),
    "readonly": ("readonlysecret", True, False),
}
MAX_REQUEST = 64 * 1024
# The characters Rust's `str::trim` removes (Unicode White_Space), so headers are split
# exactly as fake_ami splits them.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

env = os.environ
CHALLENGE = env.get("CHALLENGE")
AUTHTIMEOUT = int(env.get("AUTHTIMEOUT_MS", "10000")) / 1000.0
AUTH_FAIL_DELAY = int(env.get("AUTH_FAIL_DELAY_MS", "1000")) / 1000.0


async def read_action(reader):
    """One action: header lines up to an empty line. None on EOF or past 64 KiB."""
    raw = 0
    headers = []
    while True:
        try:
            line = await reader.readline()
        except (ValueError, ConnectionError):
            return None
        if not line or raw + len(line) > MAX_REQUEST:
            return None
        raw += len(line)
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            if not headers:
                continue
            return headers
        key, sep, value = text.partition(":")
        if not sep:
            key, value = text, ""
        headers.append((key.strip(WHITESPACE), value.lstrip(WHITESPACE)))


def get(headers, key):
    """First value of `key`, case-insensitive."""
    key = key.lower()
    for k, v in headers:
        if k.lower() == key:
            return v
    return None


def response(r, action_id, rest=()):
    out = "Response: %s\r\n" % r
    if action_id is not None:
        out += "ActionID: %s\r\n" % action_id
    for k, v in rest:
        out += "%s: %s\r\n" % (k, v)
    out += "\r\n"
    return out.encode("utf-8")


def now_stamp():
    ns = time.time_ns()
    return "%d.%06d" % (ns // 1_000_000_000, ns % 1_000_000_000 // 1000)


def md5_hex(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def is_(value, word):
    return value is not None and value.lower() == word.lower()


async def serve(reader, writer):
    loop = asyncio.get_running_loop()
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        writer.write(("Asterisk Call Manager/%s\r\n" % VERSION).encode())
        await writer.drain()
        auth_deadline = loop.time() + AUTHTIMEOUT
        user = None
        challenge = None
        while True:
            if user is None:
                left = auth_deadline - loop.time()
                try:
                    h = await asyncio.wait_for(read_action(reader), max(left, 0))
                except asyncio.TimeoutError:
                    # authtimeout: close without a word.
                    return
            else:
                h = await read_action(reader)
            if h is None:
                return
            aid = get(h, "ActionID")
            action = get(h, "Action") or ""
            close = False
            if not action:
                reply = response("Error", aid, [("Message", "Missing action in request")])
            elif is_(action, "Challenge"):
                if is_(get(h, "AuthType"), "MD5"):
                    challenge = CHALLENGE or str(100_000_000 + random.randrange(900_000_000))
                    reply = response("Success", aid, [("Challenge", challenge)])
                else:
                    reply = response("Error", aid, [("Message", "Must specify AuthType")])
            elif is_(action, "Login"):
                name = get(h, "Username") or ""
                found = USERS.get(name)
                ok = False
                if found is not None:
                    if is_(get(h, "AuthType"), "MD5"):
                        if challenge is not None:
                            want = md5_hex(challenge + found[0])
                            ok = is_(get(h, "Key"), want)
                    else:
                        ok = get(h, "Secret") == found[0]
                if ok:
                    user = found
                    reply = response("Success", aid, [("Message", "Authentication accepted")])
                    if not is_(get(h, "Events"), "off"):
                        reply += (
                            b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 61\r\n"
                            b"LastReload: 61\r\nStatus: Fully Booted\r\n\r\n"
                        )
                else:
                    await asyncio.sleep(AUTH_FAIL_DELAY)
                    close = True
                    reply = response("Error", aid, [("Message", "Authentication failed")])
            elif user is None:
                reply = response("Error", aid, [("Message", "Permission denied")])
            elif is_(action, "Ping"):
                reply = response("Success", aid, [("Ping", "Pong"), ("Timestamp", now_stamp())])
            elif is_(action, "CoreStatus"):
                if user[1]:
                    reply = response(
                        "Success",
                        aid,
                        [
                            ("CoreStartupDate", "2026-11-21"),
                            ("CoreStartupTime", "22:05:03"),
                            ("CoreReloadDate", "2026-11-21"),
                            ("CoreReloadTime", "22:05:03"),
                            ("CoreCurrentCalls", "0"),
                            ("CoreProcessedCalls", "0"),
                        ],
                    )
                else:
                    reply = response("Error", aid, [("Message", "Permission denied")])
            elif is_(action, "Command"):
                if not user[2]:
                    reply = response("Error", aid, [("Message", "Permission denied")])
                elif get(h, "Command") == "core show version":
                    reply = response(
                        "Success",
                        aid,
                        [
                            ("Message", "Command output follows"),
                            (
                                "Output",
                                "Asterisk 21.12.3 built by root @ vm on a x86_64 running "
                                "Linux on 2026-11-21 21:57:38 UTC",
                            ),
                        ],
                    )
                else:
                    reply = response(
                        "Error",
                        aid,
                        [("Message", "Command output follows"), ("Output", "No such command")],
                    )
            elif is_(action, "Logoff"):
                close = True
                reply = response("Goodbye", aid, [("Message", "Thanks for all the fish.")])
            else:
                msg = (
                    "Invalid/unknown command: %s. Use Action: ListCommands to show "
                    "available commands." % action
                )
                reply = response("Error", aid, [("Message", msg)])
            writer.write(reply)
            await writer.drain()
            if close:
                return
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()


async def main():
    host = env.get("HOST", "127.0.0.1")
    port = int(env.get("PORT", "0"))
    server = await asyncio.start_server(serve, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write("listening %d\n" % bound)
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
