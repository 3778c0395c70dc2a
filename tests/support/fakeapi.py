"""A networking-sfc REST API double for the CLI and apply tests.

`FakeApi` serves `pktchain.sfc.model.SfcModel` over HTTP on 127.0.0.1 (a
free port) from a thread, with the Neutron v2.0 paths, wrapping, filters and
error bodies, and records every request it answers.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pktchain.sfc.errors import SfcError
from pktchain.sfc.model import SfcModel
from pktchain.sfc.resources import RESOURCE_CLASSES, Port, ResourceKind

#: The ports of `pktchain demo sfc`'s lab: node-port name → (device, MAC).
DEMO_PORTS = {
    "source_vm:eth0": ("source_vm", "02:00:00:00:00:09"),
    "dest_vm:eth0": ("dest_vm", "02:00:00:00:00:10"),
    **{
        f"vm{n}:{side}": (f"vm{n}", f"02:00:00:00:{n}0:0{i}")
        for n in (1, 2, 3)
        for i, side in ((1, "in"), (2, "out"))
    },
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    token: str | None


class FakeApi:
    def __init__(self, token: str | None = None) -> None:
        self.model = SfcModel()
        self.requests: list[Request] = []
        self.token = token
        for name, (device, mac) in DEMO_PORTS.items():
            self.model.create(Port, name=name, mac_address=mac, device_id=device, node_port=name)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api.handle(self)

            def do_POST(self) -> None:
                api.handle(self)

            def do_PUT(self) -> None:
                api.handle(self)

            def do_DELETE(self) -> None:
                api.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def changes(self) -> list[tuple[str, str]]:
        """(method, path) of every request that changed something."""
        return [(r.method, r.path) for r in self.requests if r.method != "GET"]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        query = urllib.parse.parse_qs(url.query)
        token = handler.headers.get("X-Auth-Token")
        self.requests.append(Request(handler.command, url.path, query, body, token))
        if self.token is not None and token != self.token:
            return self.reply(
                handler,
                401,
                {"NeutronError": {"type": "Unauthorized", "message": "bad token", "detail": ""}},
            )
        try:
            status, payload = self.route(handler.command, url.path, query, body)
        except SfcError as exc:
            status, payload = exc.status, exc.to_neutron()
        self.reply(handler, status, payload)

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, payload: object) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, object]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["v2.0", "sfc"]:
            parts = parts[2:]
        elif parts[:1] == ["v2.0"]:
            parts = parts[1:]
        kind = ResourceKind.from_collection(parts[0])
        cls = RESOURCE_CLASSES[kind]
        if len(parts) == 1 and method == "GET":
            found = self.model.list(cls, {k: v for k, v in query.items()})
            return 200, {kind.collection: [r.to_dict() for r in found]}
        if len(parts) == 1 and method == "POST":
            return 201, {kind.value: self.model.create(cls, body[kind.value]).to_dict()}
        ident = parts[1]
        if method == "GET":
            return 200, {kind.value: self.model.get(cls, ident).to_dict()}
        if method == "PUT":
            return 200, {kind.value: self.model.update(cls, ident, body[kind.value]).to_dict()}
        self.model.delete(cls, ident)
        return 204, None
