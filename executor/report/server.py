"""``pilot serve``: a small read-only web dashboard over one monitoring database.

One HTML page, its script and stylesheet, plotly.js, and three JSON endpoints::

    GET /api/runs                 every run (``?user=NAME``, ``?since=SECONDS`` ago)
    GET /api/runs/<id>            one run: progress per label, pilots, failures, log tails
    GET /api/runs/<id>/figures    the report's plots as plotly figure JSON

The database is opened read-only (``mode=ro``) for each request, so the server can never
change it and never holds a lock between requests. It binds to 127.0.0.1 unless told
otherwise; on loopback it also refuses requests whose ``Host`` header names another
host, so a web page elsewhere cannot read it through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from executor.errors import PilotError, RunNotFound
from executor.report import api
from executor.store import Store

logger = logging.getLogger(__name__)

# The page runs only our own scripts; data arrives as JSON and is inserted as text.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static(name: str) -> bytes:
    return resources.files("executor.report").joinpath(f"static/{name}").read_bytes()


class Dashboard:
    """The dashboard server; a context manager that serves from a background thread.

    Parameters
    ----------
    db
        The monitoring database; it must exist.
    host, port
        Where to listen; port 0 picks a free port (see :attr:`url`).
    refresh
        Seconds between the page's updates while a run is going.
    """

    def __init__(
        self, db: str | Path, *, host: str = "127.0.0.1", port: int = 0, refresh: float = 2.0
    ):
        self.db = Path(db)
        self.host = host
        self.port = port
        self.refresh = refresh
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> Dashboard:
        from executor.report.assets import plotly_js

        # Fail now, with a clear message, if the database cannot be read.
        Store(self.db, readonly=True).close()
        page = _static("dashboard.html").replace(b"{refresh}", str(float(self.refresh)).encode())
        files = {
            "/": ("text/html; charset=utf-8", page),
            "/static/dashboard.js": ("text/javascript; charset=utf-8", _static("dashboard.js")),
            "/static/pilot.css": ("text/css; charset=utf-8", _static("pilot.css")),
            "/static/plotly.js": ("text/javascript; charset=utf-8", plotly_js().encode()),
        }
        handler = type(
            "Handler",
            (_Handler,),
            {"db": self.db, "files": files, "check_host": is_loopback(self.host)},
        )
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise PilotError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pilot-dashboard", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def wait(self) -> None:
        """Block until interrupted (Ctrl-C), then return; the caller stops the server."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)


class _Handler(BaseHTTPRequestHandler):
    db: Path
    files: dict[str, tuple[str, bytes]]
    check_host: bool
    server_version = "pilot-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, content_type: str, body: bytes, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value, separators=(",", ":")).encode()
        self._send(status, "application/json", body)

    def _host_allowed(self) -> bool:
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        return not self.check_host or is_loopback(host)

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._json(HTTPStatus.FORBIDDEN, {"error": "this dashboard answers on loopback only"})
            return
        url = urlsplit(self.path)
        if url.path in self.files:
            content_type, body = self.files[url.path]
            self._send(HTTPStatus.OK, content_type, body, cache=url.path.startswith("/static/"))
            return
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts[:2] != ["api", "runs"] or len(parts) > 4:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
            return
        try:
            with Store(self.db, readonly=True) as store, store.snapshot():
                value = self._api(store, parts[2:], parse_qs(url.query))
        except RunNotFound as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except (PilotError, ValueError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except Exception as exc:  # a bug must not kill the server: report it, keep serving
            logger.exception("dashboard request %s failed", self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": repr(exc)})
        else:
            self._json(HTTPStatus.OK, value)

    do_HEAD = do_GET

    def _api(self, store: Store, rest: list[str], query: dict[str, list[str]]) -> Any:
        if not rest:
            user = query.get("user", [None])[0]
            since = query.get("since", [None])[0]
            cutoff = time.time() - float(since) if since else None
            return api.runs(store, owner=user, since=cutoff)
        if len(rest) == 1:
            return api.run_detail(store, rest[0])
        if rest[1] == "figures":
            return api.run_plots(store, rest[0])
        raise ValueError(f"unknown resource {rest[1]!r}")

    def _refuse(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "the dashboard is read-only"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse
