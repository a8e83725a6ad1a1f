"""An aiosmtpd server that offers AUTH PLAIN/LOGIN, also without TLS, for the email
credential tests: it would take a password in clear text, so a refusal is the client's.

    python3 smtp_auth_sink.py PORT OUTDIR [CERT KEY]

With CERT and KEY it also offers STARTTLS. Every AUTH attempt appends one JSON line to
OUTDIR/auth.jsonl (`login`, whether the session was under TLS; never the password);
accepted messages are saved by smtp_capture.Handler as OUTDIR/<n>.json.
"""

import json
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from smtp_capture import Handler


def main():
    port, outdir = int(sys.argv[1]), sys.argv[2]
    tls_context = None
    if len(sys.argv) == 5:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(sys.argv[3], sys.argv[4])
    lock = threading.Lock()

    def authenticator(server, session, envelope, mechanism, auth_data):
        login = getattr(auth_data, "login", b"") or b""
        with lock, open(os.path.join(outdir, "auth.jsonl"), "a") as f:
            f.write(json.dumps({
                "login": login.decode("utf-8", "replace"),
                "mechanism": mechanism,
                "tls": session.ssl is not None,
            }) + "\n")
        return AuthResult(success=True)

    controller = Controller(
        Handler(outdir),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
        tls_context=tls_context,
        require_starttls=False,
    )
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
