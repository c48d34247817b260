"""A webhook receiver for keyward's tests, on 127.0.0.1.

Every POST to /hook/<name> is checked with the Standard Webhooks reference
library (`standardwebhooks`, not keyward's code) against the secret the test
gave for <name>, recorded, and answered with the next status of the script
the test gave (then 200 once the script is used up). The test drives it
through /control/<name>:

    PUT  /control/<name>  {"secret": "whsec_...", "script": [500, 500], "delays_ms": [0],
                           "retry_after": null}

(`delays_ms`: how long each request waits before it is answered, popped
like the script; then none.)
    GET  /control/<name>  -> [{"id", "timestamp", "verified", "error", "body", "answered"}]

Usage: receiver.py PORT_FILE   (binds port 0, writes the port to PORT_FILE)
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()
HOOKS = {}  # name -> {"secret", "script", "delay_ms", "retry_after", "seen": []}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self):
        name = self.path.removeprefix("/control/")
        config = json.loads(self._read())
        with LOCK:
            HOOKS[name] = {**config, "seen": []}
        self._send(204)

    def do_GET(self):
        name = self.path.removeprefix("/control/")
        with LOCK:
            seen = list(HOOKS.get(name, {}).get("seen", []))
        self._send(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})

    def do_POST(self):
        name = self.path.removeprefix("/hook/")
        body = self._read()
        with LOCK:
            hook = HOOKS.get(name)
        if hook is None:
            return self._send(404)
        record = {
            "id": self.headers.get("webhook-id"),
            "timestamp": self.headers.get("webhook-timestamp"),
            "body": body.decode("utf-8", "replace"),
            "verified": False,
            "error": None,
        }
        try:
            Webhook(hook["secret"]).verify(body, dict(self.headers.items()))
            record["verified"] = True
        except Exception as e:  # the library raises its own errors
            record["error"] = f"{type(e).__name__}: {e}"
        with LOCK:
            status = hook["script"].pop(0) if hook["script"] else 200
            delays = hook.setdefault("delays_ms", [])
            delay = delays.pop(0) if delays else 0
            record["answered"] = status
            hook["seen"].append(record)
        if delay:
            time.sleep(delay / 1000)
        headers = {}
        if hook.get("retry_after") is not None and status >= 300:
            headers["Retry-After"] = str(hook["retry_after"])
        self._send(status, b"ok", headers)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os

    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
