"""What a page loads before it opens a session: the files of ``web/`` and the ``/api`` answers.

- ``GET /`` and static files: ``avatar/web/`` (demo page, embed example, the JS client), or
  ``server.web_dir``.
- ``GET /api/avatars``: the bundled avatar names and the default.
- ``GET /api/ice``: the ICE servers a page should use (short-lived TURN credentials when
  ``server.turn_urls`` is set; they are worth a token).

Every role serves them the same way: none of it depends on where the sessions live.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from avatar.config import Config
from avatar.errors import RequestError
from avatar.face.store import builtin_names
from avatar.resources import web_root
from avatar.server.gate import Gate
from avatar.server.ice import ice_servers_for_page

WEB_DIR = web_root()


class Pages:
    """The page's files and ``/api`` answers (see the module docstring)."""

    def __init__(self, cfg: Config, gate: Gate, wall: Callable[[], float]) -> None:
        self.cfg, self.gate, self.wall = cfg, gate, wall
        self.web_dir = Path(cfg.server.web_dir) if cfg.server.web_dir else WEB_DIR

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.index)
        router.add_get("/api/avatars", self.avatars)
        router.add_get("/api/ice", self.ice)

    def add_files(self, router: web.UrlDispatcher) -> None:
        """The catch-all for ``web/``'s files: added after every other route."""
        router.add_get("/{path:.+}", self.static)

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.web_dir / "index.html"
        if not page.is_file():
            raise RequestError(f"no demo page at {page} (set server.web_dir)", 404)
        return web.FileResponse(page)

    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of ``web/`` (the JS client, pages); anything else is a JSON 404. The JS
        client's development tools (``node_modules``, dot files) are not served."""
        root = self.web_dir.resolve()
        try:
            path = (root / request.match_info["path"]).resolve()
            found = path.is_relative_to(root) and path.is_file() and _public(path.relative_to(root))
        except (ValueError, OSError):  # NUL bytes, names too long
            found = False
        if not found:
            raise RequestError(f"not found: {request.path[:100]!r}", 404)
        return web.FileResponse(path)

    async def avatars(self, request: web.Request) -> web.Response:
        names = builtin_names()
        return web.json_response({"avatars": names, "default": self.cfg.render.avatar})

    async def ice(self, request: web.Request) -> web.Response:
        self.gate.authenticate(request)
        servers = ice_servers_for_page(self.cfg.server, self.wall())
        return web.json_response({"iceServers": servers})


def _public(relative: Path) -> bool:
    return not any(part == "node_modules" or part.startswith(".") for part in relative.parts)
