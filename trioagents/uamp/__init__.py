"""UAMP: the event model every transport speaks internally (PROTOCOLS.md §1).

Frozen ``attrs`` classes for every event and content item, and one ``cattrs`` converter that
owns the JSON wire format. No trio, no I/O: ids and clocks are injected.
"""

from __future__ import annotations

from . import _events
from ._codec import (
    CLIENT_EVENT_TYPES as CLIENT_EVENT_TYPES,
)
from ._codec import (
    SERVER_EVENT_TYPES as SERVER_EVENT_TYPES,
)
from ._codec import (
    Clock as Clock,
)
from ._codec import (
    DecodeError as DecodeError,
)
from ._codec import (
    Encoder as Encoder,
)
from ._codec import (
    FixedClock as FixedClock,
)
from ._codec import (
    IdFactory as IdFactory,
)
from ._codec import (
    RandomIds as RandomIds,
)
from ._codec import (
    SequentialIds as SequentialIds,
)
from ._codec import (
    SystemClock as SystemClock,
)
from ._codec import (
    converter as converter,
)
from ._codec import (
    decode_client as decode_client,
)
from ._codec import (
    decode_server as decode_server,
)
from ._events import *  # noqa: F403

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
] + [
    n
    for n, v in vars(_events).items()
    if not n.startswith("_") and isinstance(v, type) and v.__module__ == _events.__name__
]
