"""The browser side: ``/static/…`` (the ES module, the demo page) and the demo chat page.

* ``GET /static/{file}`` — files shipped in ``trioagents/static/`` (read once, from the
  package; nothing outside that folder is ever served).
* ``GET /agents/{name}/chat`` — the demo chat page for an agent (it talks UAMP to
  ``/agents/{name}/uamp``); also ``GET /`` in single-agent mode.
"""

from __future__ import annotations

import html
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..transports._runtime import Runtime

__all__ = ["web_routes", "static_files"]

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """The files of ``trioagents/static`` by name: ``(content, media type)``."""
    files: dict[str, tuple[bytes, str]] = {}
    for item in resources.files("trioagents").joinpath("static").iterdir():
        name = item.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if item.is_file() and suffix in _TYPES:
            files[name] = (item.read_bytes(), _TYPES[suffix])
    return files


def _not_found(code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": {}}}, 404)


def web_routes(runtime: Runtime) -> list[BaseRoute]:
    """``/static/{file}``, ``/agents/{agent}/chat`` and, in single-agent mode, ``/``."""
    files = static_files()
    page = files["chat.html"][0].decode()

    async def static(request: Request) -> Response:
        name = request.path_params["file"]
        found = files.get(name)
        if found is None:
            return _not_found("not_found", f"no static file {name!r}")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    def render(agent: str) -> Response:
        text = page.replace("{{agent}}", html.escape(agent, quote=True))
        return Response(text, media_type=_TYPES[".html"], headers={"Cache-Control": "no-cache"})

    async def chat(request: Request) -> Response:
        name = request.path_params["agent"]
        if name not in runtime.agents:
            return _not_found("agent_not_found", f"no agent named {name!r}")
        return render(name)

    async def root(request: Request) -> Response:
        agent = runtime.default_agent
        if agent is None:
            return _not_found("not_found", "no default agent: open /agents/{name}/chat")
        return render(agent.name)

    return [
        Route("/static/{file}", static, methods=["GET", "HEAD"]),
        Route("/agents/{agent}/chat", chat, methods=["GET", "HEAD"]),
        Route("/", root, methods=["GET", "HEAD"]),
    ]
