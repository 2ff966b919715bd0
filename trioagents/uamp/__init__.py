"""UAMP: the event model every transport speaks internally (PROTOCOLS.md §1).

Frozen ``attrs`` classes for every event and content item, and one ``cattrs`` converter that
owns the JSON wire format. No trio, no I/O: ids and clocks are injected.
"""

from . import _events
from ._codec import (
    CLIENT_EVENT_TYPES as CLIENT_EVENT_TYPES,
    SERVER_EVENT_TYPES as SERVER_EVENT_TYPES,
    Clock as Clock,
    DecodeError as DecodeError,
    Encoder as Encoder,
    FixedClock as FixedClock,
    IdFactory as IdFactory,
    RandomIds as RandomIds,
    SequentialIds as SequentialIds,
    SystemClock as SystemClock,
    converter as converter,
    decode_client as decode_client,
    decode_server as decode_server,
)
from ._events import *  # noqa: F403  (the event classes; _events.__all__ lists them)

__all__ = [
    "CLIENT_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "Clock",
    "DecodeError",
    "Encoder",
    "FixedClock",
    "IdFactory",
    "RandomIds",
    "SequentialIds",
    "SystemClock",
    "converter",
    "decode_client",
    "decode_server",
    *_events.__all__,
]
