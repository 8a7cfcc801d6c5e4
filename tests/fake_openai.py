"""A tiny OpenAI-compatible chat server on 127.0.0.1 for tests: scripted answers, every request recorded.

Each script item answers one ``POST /v1/chat/completions``:

- a ``str``: a 200 completion whose message content is that text;
- ``(status, body)``: that HTTP status with ``body`` (a dict is sent as JSON);
- a callable ``f(request_json) -> item``: computed per request (e.g. an answer per prompt).

When the script runs out the server answers 500 "script exhausted", so an unexpected request fails the test.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    def __init__(self, script=()):
        self.script = list(script)
        self.requests: list[dict] = []  # JSON bodies, in arrival order
        self.headers: list[dict[str, str]] = []  # lower-cased names
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, body: dict):
        with self._lock:
            self.requests.append(body)
            item = self.script.pop(0) if self.script else (500, {"error": {"message": "script exhausted"}})
        return item(body) if callable(item) else item

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with fake._lock:
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                item = fake._next(json.loads(raw or b"{}"))
                if isinstance(item, str):
                    return self._send(200, _completion(item))
                status, body = item
                self._send(status, body)

            def _send(self, status: int, body) -> None:
                data = body if isinstance(body, bytes) else (json.dumps(body) if isinstance(body, dict) else str(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _completion(content: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
