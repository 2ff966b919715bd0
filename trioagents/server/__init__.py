"""The ASGI server: routing, lifespan, and ``serve()`` on Hypercorn's trio worker."""

from __future__ import annotations

from ._app import AgentServer as AgentServer, error_response as error_response
from ._serve import hypercorn_config as hypercorn_config, serve as serve

__all__ = ["AgentServer", "error_response", "hypercorn_config", "serve"]
