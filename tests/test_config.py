"""``Config.load``: TOML file, then ``TRIOAGENTS_*`` environment, then keyword arguments."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from trioagents import Config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trioagents.toml"
    path.write_text(text)
    return path


def test_defaults_without_sources() -> None:
    cfg = Config.load(env={})
    assert cfg == Config()
    assert (cfg.host, cfg.port, cfg.max_steps, cfg.ws_ping_interval) == (
        "127.0.0.1",
        8000,
        10,
        None,
    )


def test_keyword_arguments() -> None:
    cfg = Config.load(env={}, port=0, default_agent="helper", sse_keepalive=2.5, gc_freeze=False)
    assert (cfg.port, cfg.default_agent, cfg.sse_keepalive, cfg.gc_freeze) == (
        0,
        "helper",
        2.5,
        False,
    )
    # None means "not given": the default (or an earlier source) stays.
    assert Config.load(env={}, port=None).port == 8000


def test_environment_values_are_parsed_by_field_type() -> None:
    env = {
        "TRIOAGENTS_HOST": "0.0.0.0",
        "TRIOAGENTS_PORT": "9001",
        "TRIOAGENTS_SEND_TIMEOUT": "1.5",
        "TRIOAGENTS_GC_FREEZE": "off",
        "TRIOAGENTS_ACCESS_LOG": "YES",
        "TRIOAGENTS_WS_PING_INTERVAL": "20",
        "TRIOAGENTS_GC_GEN0_THRESHOLD": "none",
        "TRIOAGENTS_PUBLIC_URL": "https://agents.example",
        "PORT": "1",  # not ours
        "trioagents_port": "2",  # names are upper case
    }
    cfg = Config.load(env=env)
    assert cfg.host == "0.0.0.0"
    assert cfg.port == 9001 and type(cfg.port) is int
    assert cfg.send_timeout == 1.5
    assert cfg.gc_freeze is False
    assert cfg.access_log is True
    assert cfg.ws_ping_interval == 20.0 and type(cfg.ws_ping_interval) is float
    assert cfg.gc_gen0_threshold is None
    assert cfg.public_url == "https://agents.example"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("On", True), ("0", False), ("FALSE", False), ("no", False)],
)
def test_environment_booleans(raw: str, expected: bool) -> None:
    assert Config.load(env={"TRIOAGENTS_ACCESS_LOG": raw}).access_log is expected


def test_env_parameter_replaces_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOAGENTS_PORT", "7007")
    assert Config.load().port == 7007  # default: the process environment
    assert Config.load(env={}).port == 8000  # an explicit mapping is the whole environment


def test_toml_file_top_level_and_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 8123\nhost = "::1"\nmax_steps = 3\nws_ping_interval = 5.0\n')
    cfg = Config.load(file=path, env={})
    assert (cfg.port, cfg.host, cfg.max_steps, cfg.ws_ping_interval) == (8123, "::1", 3, 5.0)
    table = write(tmp_path, '[trioagents]\ndefault_agent = "a.b"\naccess_log = true\n')
    cfg = Config.load(file=str(table), env={})
    assert (cfg.default_agent, cfg.access_log) == ("a.b", True)


def test_precedence_file_then_env_then_keywords(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 1\nmax_steps = 2\nsend_timeout = 3.0\n")
    env = {"TRIOAGENTS_PORT": "10", "TRIOAGENTS_MAX_STEPS": "20"}
    cfg = Config.load(file=path, env=env, port=100)
    assert (cfg.port, cfg.max_steps, cfg.send_timeout) == (100, 20, 3.0)


def test_replace_ignores_none() -> None:
    cfg = Config().replace(port=0, host=None)
    assert (cfg.port, cfg.host) == (0, "127.0.0.1")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]


def test_unknown_file_keys_raise(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 1\nprot = 2\nmax_stpes = 3\n")
    with pytest.raises(ValueError, match=r"unknown config keys") as info:
        Config.load(file=path, env={})
    assert "['max_stpes', 'prot']" in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_toml_raises_value_error(tmp_path: Path) -> None:
    path = write(tmp_path, "port = = 1\n")
    with pytest.raises(ValueError):
        Config.load(file=path, env={})


@pytest.mark.parametrize(
    ("name", "raw", "kind"),
    [
        ("PORT", "eighty", "int"),
        ("PORT", "80.5", "int"),
        ("SEND_TIMEOUT", "soon", "float"),
        ("GC_FREEZE", "maybe", "bool"),
        ("ACCESS_LOG", "", "bool"),
        ("WS_PING_INTERVAL", "often", "float"),
    ],
)
def test_bad_environment_values_raise_clearly(name: str, raw: str, kind: str) -> None:
    with pytest.raises(ValueError) as info:
        Config.load(env={f"TRIOAGENTS_{name}": raw})
    message = str(info.value)
    assert f"TRIOAGENTS_{name}={raw!r}" in message
    assert kind in message


def test_unknown_keyword_raises_value_error() -> None:
    with pytest.raises(ValueError, match="prot"):
        Config.load(env={}, prot=1)


def test_bad_file_values_raise_value_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "eighty"\n')
    with pytest.raises(ValueError, match="port"):
        Config.load(file=path, env={})
