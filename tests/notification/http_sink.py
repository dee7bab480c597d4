"""A loopback HTTP receiver for the notification tests' webhooks.

    /usr/bin/python3 http_sink.py PORT DIR

Answers every POST with 200 and writes it to DIR/<n>.json as
{"path": ..., "message_id": <X-Message-Id header>, "traceparent": <traceparent
header>, "body": <parsed JSON>}.
A POST to a path starting with /reject gets 400 (a permanent failure).
DIR/ready once it listens. Stops on SIGTERM.
"""
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
count = [0]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        if self.path.startswith("/reject"):
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"rejected")
            return
        with lock:
            count[0] += 1
            k = count[0]
        path = os.path.join(self.server.folder, "%04d.json" % k)
        with open(path + ".tmp", "w") as f:
            json.dump({"path": self.path, "message_id": self.headers.get("X-Message-Id", ""),
                       "traceparent": self.headers.get("traceparent", ""),
                       "body": json.loads(raw or b"{}")}, f)
        os.rename(path + ".tmp", path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    os.makedirs(folder, exist_ok=True)
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.folder = folder
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
    open(os.path.join(folder, "ready"), "w").close()
    srv.serve_forever()


main()
