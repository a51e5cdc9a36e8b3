"""An HTTP proxy in front of the S3 server that answers some requests with S3's transient errors.

Every `every`-th request that has not failed before is answered `failures` times in a row with
503 SlowDown or 500 InternalError (alternately), the errors real S3 returns under load; its next
attempt goes through. A client without retries fails the job; one that retries loses nothing.
What was failed is counted per method, so a test can show the faults really happened.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERRORS = [(503, "SlowDown", "Please reduce your request rate."),
          (500, "InternalError", "We encountered an internal error. Please try again.")]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


class FlakyS3Proxy:
    def __init__(self, upstream: str, every: int = 4, failures: int = 2):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.every, self.failures = every, failures
        self.lock = threading.Lock()
        self.requests = 0
        self.failed: Counter = Counter()  # request key -> times failed
        self.failed_by_method: Counter = Counter()
        self.errors_sent: Counter = Counter()  # S3 error code -> responses
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FlakyS3Proxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _should_fail(self, key: tuple) -> tuple[int, str, str] | None:
        with self.lock:
            self.requests += 1
            times = self.failed.get(key, 0)
            if 0 < times < self.failures or (times == 0 and self.requests % self.every == 0):
                self.failed[key] += 1
                self.failed_by_method[key[0]] += 1
                error = ERRORS[sum(self.failed.values()) % len(ERRORS)]
                self.errors_sent[error[1]] += 1
                return error
            return None

    def summary(self) -> str:
        methods = ", ".join(f"{m} {n}" for m, n in sorted(self.failed_by_method.items()))
        codes = ", ".join(f"{c} {n}" for c, n in sorted(self.errors_sent.items()))
        return (f"{self.requests} S3 requests, {sum(self.failed.values())} answered with an error "
                f"({codes}; {methods}), {len(self.failed)} distinct requests hit")

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for the SDKs' PUTs

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body()
                key = (self.command, self.path, hashlib.sha1(body).hexdigest()[:12])
                error = proxy._should_fail(key)
                if error is not None:
                    status, code, message = error
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>{message}</Message><RequestId>flaky</RequestId></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                if self.command == "HEAD":  # the object's length, with no body
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

        return Handler
