"""A callback receiver as its own process (so a test can kill -9 it): answers 500 to its
first FAIL_FIRST requests, 2xx after, and appends every request it saw (headers and
body) to a JSON-lines file.

    python -m tests.fakes.receiver PORT LOG [FAIL_FIRST]
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    port, log, fail_first = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3] or 0)
    seen = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal seen
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen += 1
            answer = 500 if seen <= fail_first else 204
            record = {
                "delivery": self.headers.get("X-TUI-Agent-Delivery"),
                "signature": self.headers.get("X-TUI-Agent-Signature"),
                "body": body.decode(),
                "answer": answer,
                "pid": os.getpid(),
            }
            with log.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
