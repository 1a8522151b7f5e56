"""`python -m bench.stub_ingest PORT`: an ingest stand-in that accepts every NDJSON line at once.

Item 4 measures the worker's own CPU per event, sending included; against the real ingest the
sender would mostly wait for FerretDB. The answer has the real batch format (one result per
line with its index and status), so the emitter runs its real code path.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn offers the emitter's session

    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        count = sum(1 for line in body.split(b"\n") if line.strip())
        answer = json.dumps({"results": [{"index": i, "id": None, "status": "accepted"} for i in range(count)],
                             "accepted": count, "duplicate": 0, "invalid": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
