"""A loopback SMTP server for the notification tests (Debian's aiosmtpd).

    /usr/bin/python3 smtp_sink.py PORT DIR

Writes each message it accepts to DIR/<n>.eml (the raw message with the
envelope's MAIL FROM and RCPT TO, and the client's address and port
(one per SMTP session), as X-Envelope-* lines first; n goes on
from the highest already in DIR, so a restart overwrites nothing), and
DIR/ready once it listens. Stops on SIGTERM. Also make run's mail catcher
(scripts/services.sh).
"""
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.n = max([int(f[:-4]) for f in os.listdir(folder)
                      if f.endswith(".eml") and f[:-4].isdigit()] or [0])
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        path = os.path.join(self.folder, "%04d.eml" % n)
        with open(path + ".tmp", "wb") as f:
            f.write(("X-Envelope-From: %s\r\n" % envelope.mail_from).encode())
            f.write(("X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos)).encode())
            f.write(("X-Envelope-Peer: %s:%s\r\n" % tuple(session.peer[:2])).encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    os.makedirs(folder, exist_ok=True)
    c = Controller(Sink(folder), hostname="127.0.0.1", port=port)
    c.start()
    open(os.path.join(folder, "ready"), "w").close()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    c.stop()


main()
