"""The public API, pinned: what each public module exports, documented, and layered."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import trioagents
import trioagents.client
import trioagents.testing
from trioagents import uamp

PACKAGE_DIR = Path(trioagents.__file__).parent

TRIOAGENTS_ALL = [
    "Agent",
    "AgentError",
    "AgentServer",
    "BuiltinModel",
    "CallTool",
    "Config",
    "Context",
    "Fail",
    "LocalProtocolError",
    "MaxStepsExceeded",
    "Message",
    "Model",
    "ModelError",
    "ModelRequest",
    "OpenAIModel",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "Session",
    "Skill",
    "Think",
    "ToolTimeout",
    "TrioAgentsError",
    "handoff",
    "hook",
    "http",
    "prompt",
    "serve",
    "tool",
    "websocket",
]

UAMP_EVENT_CLASSES = [
    "AudioContent",
    "AudioDelta",
    "AudioOutputDelta",
    "AudioOutputDone",
    "Capabilities",
    "CapabilitiesQuery",
    "ClientCapabilities",
    "Error",
    "ErrorInfo",
    "FileContent",
    "ImageContent",
    "InputAudio",
    "InputFile",
    "InputImage",
    "InputText",
    "InputTyping",
    "InputVideo",
    "PaymentAccepted",
    "PaymentBalance",
    "PaymentError",
    "PaymentInfo",
    "PaymentRequired",
    "PaymentSubmit",
    "Ping",
    "Pong",
    "Progress",
    "RateLimit",
    "ResponseCancel",
    "ResponseCancelled",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDelta",
    "ResponseDone",
    "ResponseError",
    "ResponseInfo",
    "SessionCreate",
    "SessionCreated",
    "SessionEnd",
    "SessionError",
    "SessionInfo",
    "SessionUpdate",
    "SessionUpdated",
    "TextContent",
    "TextDelta",
    "Thinking",
    "ToolCall",
    "ToolCallContent",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolCallInfo",
    "ToolProgressDelta",
    "ToolProgressInfo",
    "ToolResult",
    "ToolResultContent",
    "ToolResultDelta",
    "ToolResultInfo",
    "TranscriptDelta",
    "TranscriptDone",
    "UnknownEvent",
    "UsageDelta",
    "UsageDeltaInfo",
    "UsageInfo",
    "VideoContent",
]

UAMP_CODEC = [
    "CLIENT_EVENT_TYPES",
    "Clock",
    "DecodeError",
    "Encoder",
    "FixedClock",
    "IdFactory",
    "RandomIds",
    "SERVER_EVENT_TYPES",
    "SequentialIds",
    "SystemClock",
    "converter",
    "decode_client",
    "decode_server",
]

UAMP_TYPES = [  # unions and constants that describe the event model
    "CONTENT_TYPES",
    "ClientEvent",
    "ContentItem",
    "DELTA_TYPES",
    "Delta",
    "JSON",
    "ServerEvent",
    "TERMINAL_TYPES",
]
UAMP_ALL = sorted(UAMP_EVENT_CLASSES + UAMP_CODEC + UAMP_TYPES)

# Public names that are data, not classes or functions: they cannot carry their own docstring.
DATA_NAMES = {"CLIENT_EVENT_TYPES", "SERVER_EVENT_TYPES", "converter", "ScriptedModel", *UAMP_TYPES}

CLIENT_ALL = [
    "AgentClient",
    "AgentClientClosed",
    "AgentClientError",
    "CloseInfo",
    "ResponseResult",
    "RpcError",
    "RpcStream",
    "SendQueueFull",
    "UampClient",
    "UampClientSession",
    "UampClosed",
    "UampError",
    "open_agent_client",
    "open_uamp_client",
]

TESTING_ALL = [
    "CallTool",
    "Fail",
    "Reply",
    "ScriptedModel",
    "TestServer",
    "Think",
    "assert_no_leaked_tasks",
    "leaked_tasks",
    "open_test_server",
]

MODULES: list[tuple[types.ModuleType, list[str]]] = [
    (trioagents, TRIOAGENTS_ALL),
    (uamp, UAMP_ALL),
    (trioagents.client, CLIENT_ALL),
    (trioagents.testing, TESTING_ALL),
]


def _own_doc(obj: Any) -> str | None:
    """The docstring ``obj`` itself declares (a class's ``__doc__`` is never inherited)."""
    return obj.__doc__ if isinstance(obj, type) else inspect.getdoc(obj)


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=lambda m: getattr(m, "__name__", ""))
def test_all_is_pinned(module: types.ModuleType, expected: list[str]) -> None:
    assert sorted(module.__all__) == expected
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=lambda m: getattr(m, "__name__", ""))
def test_every_exported_name_imports_and_is_documented(
    module: types.ModuleType, expected: list[str]
) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {module.__name__} import *", namespace)
    assert set(expected) <= set(namespace)
    undocumented = []
    for name in expected:
        obj = getattr(module, name)
        assert namespace[name] is obj
        if name in DATA_NAMES:
            continue
        assert isinstance(obj, type) or callable(obj), name
        doc = _own_doc(obj)
        if not doc or not doc.strip():
            undocumented.append(name)
    assert not undocumented, f"{module.__name__}: no docstring on {undocumented}"


def test_modules_have_docstrings() -> None:
    for module in (trioagents, uamp, trioagents.client, trioagents.testing):
        assert module.__doc__ and module.__doc__.strip(), module.__name__


def test_every_uamp_event_class_is_exported() -> None:
    defined = {
        name
        for name, value in vars(uamp._events).items()
        if isinstance(value, type) and value.__module__ == uamp._events.__name__
    }
    assert defined == set(UAMP_EVENT_CLASSES)
    wire_types = {*uamp.CLIENT_EVENT_TYPES.values(), *uamp.SERVER_EVENT_TYPES.values()}
    assert {c.__name__ for c in wire_types} <= set(UAMP_EVENT_CLASSES)


def test_version() -> None:
    assert isinstance(trioagents.__version__, str)
    assert trioagents.__version__.count(".") == 2


def test_uamp_has_no_public_names_outside_all() -> None:
    public = {
        name
        for name, value in vars(uamp).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(uamp.__all__) == set()


# --------------------------------------------------------------------------------------------
# Layering: the sans-I/O layers never import trio, httpx or hypercorn
# --------------------------------------------------------------------------------------------

SANS_IO_MODULES = sorted(
    "trioagents."
    + ".".join(p.relative_to(PACKAGE_DIR).with_suffix("").parts).removesuffix(".__init__")
    for layer in ("uamp", "protocols")
    for p in (PACKAGE_DIR / layer).glob("*.py")
)

# Import the sans-I/O modules with ``trioagents/__init__.py`` replaced by an empty package, so
# only what they import themselves (transitively) is loaded.
_ISOLATED = """
import sys, types
pkg = types.ModuleType("trioagents")
pkg.__path__ = [{path!r}]
sys.modules["trioagents"] = pkg
import importlib
for name in {modules!r}:
    importlib.import_module(name)
print(sorted(m for m in ("trio", "httpx", "hypercorn", "anyio", "starlette") if m in sys.modules))
"""


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip()


def test_sans_io_module_list_is_complete() -> None:
    assert "trioagents.uamp" in SANS_IO_MODULES
    assert "trioagents.protocols.completions" in SANS_IO_MODULES
    assert "trioagents.protocols.sse" in SANS_IO_MODULES
    for name in SANS_IO_MODULES:
        importlib.import_module(name)


def test_sans_io_modules_do_not_import_io_libraries() -> None:
    code = _ISOLATED.format(path=str(PACKAGE_DIR), modules=SANS_IO_MODULES)
    assert _run(code) == "[]"


def test_importing_sans_io_packages_does_not_load_trio() -> None:
    code = (
        "import trioagents.uamp, trioagents.protocols.completions, trioagents.protocols.sse; "
        "import sys; print('trio' in sys.modules)"
    )
    assert _run(code) == "False"
