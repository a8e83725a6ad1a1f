"""aiosmtpd handler used by the alerting tests: saves every accepted message.

Started as `python3 -m aiosmtpd -n -c smtp_capture.Handler -l 127.0.0.1:PORT OUTDIR`
(with this directory on PYTHONPATH). Each message becomes OUTDIR/<n>.json with the
envelope sender, recipients, whether the session used TLS, and the raw message text.
"""

import json
import os


class Handler:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_capture.Handler needs one argument: the output directory")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": session.ssl is not None,
            "content": envelope.content.decode("utf-8", "replace"),
        }
        tmp = os.path.join(self.outdir, "%d.tmp" % self.count)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.outdir, "%d.json" % self.count))
        return "250 Message accepted for delivery"
