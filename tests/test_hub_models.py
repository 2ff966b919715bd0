"""The hub's ``/v1/models``: callable agents in the OpenAI shape, read by the real client."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import trio
from hub_helpers import open_hub

from trioagents import Agent
from trioagents.hub import AgentRecord, MemoryHubStore
from trioagents.portal import open_portal


async def test_models_list_online_agents_with_the_openai_client() -> None:
    store = MemoryHubStore()
    await store.add_token("tok-a", "alpha")
    await store.add_token("tok-b", "beta")
    await store.add_token("tok-c", "gamma")  # registered, never connects
    await store.put_agent(AgentRecord(name="gamma"))
    await store.put_agent(AgentRecord(name="direct", agent_url="http://127.0.0.1:9/agents/d"))
    with trio.fail_after(20):
        async with open_hub(store) as h:
            async with (
                open_portal(
                    {
                        "portal_ws_url": h.portal_url,
                        "agents": [
                            {"name": "alpha", "token": "tok-a"},
                            {"name": "beta", "token": "tok-b"},
                        ],
                    },
                    [Agent("alpha"), Agent("beta")],
                ) as portal,
            ):
                await portal.wait_registered()
                await h.hub.wait_online("beta")

                def with_openai() -> dict[str, Any]:
                    out: dict[str, Any] = {}
                    hub = openai.OpenAI(base_url=h.url + "/v1", api_key="unused", max_retries=0)
                    out["all"] = [(m.id, m.object, m.owned_by) for m in hub.models.list()]
                    hub.close()
                    for name in ("beta", "gamma", "ghost"):
                        client = openai.OpenAI(
                            base_url=h.agent_url(name, "/v1"), api_key="unused", max_retries=0
                        )
                        try:
                            out[name] = [m.id for m in client.models.list()]
                        except openai.NotFoundError as exc:
                            out[name] = (exc.status_code, exc.code)
                        finally:
                            client.close()
                    return out

                got = await trio.to_thread.run_sync(with_openai)
                assert got["all"] == [
                    ("alpha", "model", "trioagents"),
                    ("beta", "model", "trioagents"),
                    ("direct", "model", "trioagents"),
                ]
                assert got["beta"] == ["beta"]
                assert got["gamma"] == []  # known but offline
                assert got["ghost"] == (404, "model_not_found")
                async with httpx.AsyncClient() as http:
                    r = await http.get(h.url + "/v1/models/")  # trailing slash ignored
                    assert r.status_code == 200 and r.json()["object"] == "list"
                    assert [m["id"] for m in r.json()["data"]] == ["alpha", "beta", "direct"]
                    r = await http.get(h.agent_url("alpha", "/models"))
                    assert [m["id"] for m in r.json()["data"]] == ["alpha"]
            # The daemon left: its agents are no longer models.
            await h.hub.wait_online("alpha", online=False)
            await h.hub.wait_online("beta", online=False)
            async with httpx.AsyncClient() as http:
                r = await http.get(h.url + "/v1/models")
                assert [m["id"] for m in r.json()["data"]] == ["direct"]
