import httpx
import trio

from trioagents import Agent
from trioagents.testing import open_test_server


async def test_health_and_completion() -> None:
    with trio.fail_after(10):
        async with (
            open_test_server(Agent("echo")) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            r = await http.get("/health")
            assert r.json() == {"status": "ok", "agents": 1}
            r = await http.post(
                "/agents/echo/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.json()["choices"][0]["message"]["content"] == "You said: hi"
