"""A fake shop and payment API on 127.0.0.1, for the workflow example and its tests.

It stands for the outside world a workflow talks to (real HTTP, real sockets):

    GET  /orders?after=N        orders with id > N: [{"id", "customer", "amount"}]
    POST /orders                {"customer", "amount"} -> the new order (tests add orders)
    POST /charges               {"order_id", "amount"} -> 200 the charge, or per the order's mode:
                                  decline         402, nothing charged
                                  cut_once        connection closed, nothing charged (once)
                                  apply_then_cut  charged, then the connection closed (once)
                                  apply_then_cut_unknown  the same, then lookups answer 503
    GET  /charges/{order_id}    200 the charge, 404 none; 503 when the mode is `unknown`
    PUT  /modes/{order_id}      {"mode": ...} sets an order's mode (`unknown`: lookups fail)
    GET  /charges               every charge, to check that none was made twice

Every charge is keyed by order id: charging an order twice is recorded twice
(a real API might dedupe; this one counts, so that tests see double effects).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeShop:
    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []
        self.charges: list[dict[str, Any]] = []
        self.modes: dict[str, str] = {}
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's address
        return f"http://{host}:{port}"

    def start(self) -> FakeShop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_order(self, customer: str, amount: int, mode: str = "") -> dict[str, Any]:
        with self.lock:
            order = {"id": len(self.orders) + 1, "customer": customer, "amount": amount}
            self.orders.append(order)
            if mode:
                self.modes[str(order["id"])] = mode
            return order

    def charges_of(self, order_id: int | str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.charges if str(c["order_id"]) == str(order_id)]

    # -- HTTP ---------------------------------------------------------------------------

    def _charge(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        """(status, body) to answer, or None to cut the connection."""
        key = str(body.get("order_id"))
        with self.lock:
            mode = self.modes.get(key, "")
            if mode == "decline":
                return 402, {"error": "card declined"}
            if mode == "cut_once":
                self.modes[key] = ""
                return None
            charge = {
                "order_id": body.get("order_id"),
                "amount": body.get("amount"),
                "charge_id": f"ch_{len(self.charges) + 1}",
            }
            self.charges.append(charge)
            if mode in ("apply_then_cut", "apply_then_cut_unknown"):
                self.modes[key] = "unknown" if mode == "apply_then_cut_unknown" else ""
                return None
            return 200, charge

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                return

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("content-length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/orders":
                    after = int(
                        dict(p.split("=") for p in query.split("&") if "=" in p).get("after", 0)
                    )
                    with shop.lock:
                        self._send(200, [o for o in shop.orders if o["id"] > after])
                elif path == "/charges":
                    with shop.lock:
                        self._send(200, list(shop.charges))
                elif match := re.fullmatch(r"/charges/(\w+)", path):
                    order_id = match.group(1)
                    if shop.modes.get(order_id) == "unknown":
                        self._send(503, {"error": "the ledger is unavailable"})
                        return
                    found = shop.charges_of(order_id)
                    self._send(200, found[-1]) if found else self._send(404, {"error": "none"})
                else:
                    self._send(404, {"error": "no such path"})

            def do_POST(self) -> None:
                if self.path == "/orders":
                    body = self._body()
                    self._send(
                        200, shop.add_order(body["customer"], body["amount"], body.get("mode", ""))
                    )
                elif self.path == "/charges":
                    answer = shop._charge(self._body())
                    if answer is None:
                        self.close_connection = True
                        self.connection.close()
                        return
                    self._send(*answer)
                else:
                    self._send(404, {"error": "no such path"})

            def do_PUT(self) -> None:
                if match := re.fullmatch(r"/modes/(\w+)", self.path):
                    with shop.lock:
                        shop.modes[match.group(1)] = self._body().get("mode", "")
                    self._send(200, {})
                else:
                    self._send(404, {"error": "no such path"})

        return Handler
