"""The keys of a topology file as the parser reads them: the keys with a limit
(`LIMITED_KEYS`) and the table reader that refuses unknown keys and names the dotted
path at fault (`Table`, `Invalid`). Used by `eeh_sriov.topology` only."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

from device_model.adapter_config import AdapterConfig
from eeh_abi.limits import Limit, limits
from eeh_abi.vf_settings import VfSettings
from eeh_sriov.topology_types import GuestSpec
from hypervisor_shim.pe import PolicyConfig

_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

# ---- the keys with a limit

# Every key whose value has a limit, by its path (<n>: a VF's number, in either form of
# its table; <i>: a guest's place), and the configuration field that declares the limit
# and the default (eeh_abi.limits). The parser takes limits and defaults from here only.
LIMITED_KEYS: dict[str, tuple[type[Any], str]] = {
    "adapter.total_vfs": (AdapterConfig, "total_vfs"),
    "adapter.vf.<n>.vlan": (VfSettings, "vlan"),
    "adapter.vf.<n>.mtu": (VfSettings, "mtu"),
    "policy.max_freezes": (PolicyConfig, "max_freezes"),
    "policy.window_s": (PolicyConfig, "window_s"),
    "policy.retry_hint_ms": (PolicyConfig, "retry_hint_ms"),
    "policy.max_reset_failures": (PolicyConfig, "max_reset_failures"),
    "policy.adapter_driver_deadline_ms": (PolicyConfig, "adapter_driver_deadline_ms"),
    "guests[<i>].memory_mib": (GuestSpec, "memory_mib"),
    "guests[<i>].cpus": (GuestSpec, "cpus"),
}


def key_limit(key: str) -> Limit:
    """The limit of a key of `LIMITED_KEYS` (as the configuration field declares it)."""
    cls, name = LIMITED_KEYS[key]
    return limits(cls)[name]


def key_default(key: str) -> Any:
    """The default of a key of `LIMITED_KEYS` (the configuration field's)."""
    cls, name = LIMITED_KEYS[key]
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


class Invalid(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def join_key(path: str, key: str) -> str:
    if not _BARE_KEY.fullmatch(key):
        key = json.dumps(key)  # a TOML basic string for keys that need quotes
    return f"{path}.{key}" if path else key


def kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def show(value: object) -> str:
    return json.dumps(value) if isinstance(value, (str, bool)) else repr(value)


class Table:
    """One TOML table at a dotted path; refuses keys it does not know on sight."""

    def __init__(self, data: object, path: str, allowed: Sequence[str],
                 template: str | None = None) -> None:
        if not isinstance(data, dict):
            raise Invalid(path, f"must be a table, not {kind_of(data)}")
        self.data: dict[str, object] = data
        self.path = path
        self.template = path if template is None else template  # its path in LIMITED_KEYS
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                guess = f"did you mean {hint[0]!r}? " if hint else ""
                raise Invalid(self.key(key),
                               f"unknown key; {guess}known here: {', '.join(allowed)}")

    def key(self, name: str) -> str:
        return join_key(self.path, name)

    def get(self, name: str) -> object | None:
        return self.data.get(name)  # TOML has no null: None means absent

    def integer(self, name: str, default: int | None, lo: int, hi: int | None = None) -> int:
        value = self.get(name)
        if value is None:
            if default is None:
                raise Invalid(self.key(name), "required")
            return default
        return int_in(self.key(name), value, lo, hi)

    def limited(self, name: str, default: Any = None) -> Any:
        """A key of LIMITED_KEYS: its value within the configuration field's limit, or (absent)
        `default`, else the field's default."""
        key = join_key(self.template, name)
        value = self.get(name)
        if value is None:
            return key_default(key) if default is None else default
        return limited_value(self.key(name), value, key_limit(key))

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise Invalid(self.key(name),
                           f"must be true or false, not {kind_of(value)} ({show(value)})")
        return value

    def string(self, name: str, default: str | None) -> str:
        value = self.get(name)
        if value is None:
            if default is None:
                raise Invalid(self.key(name), "required")
            return default
        if not isinstance(value, str):
            raise Invalid(self.key(name), f"must be a string, not {kind_of(value)} ({value!r})")
        return value

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise Invalid(self.key(name), f"must be one of {', '.join(map(show, choices))}, "
                                           f"not {show(value)}")
        return value

    def table(self, name: str, allowed: Sequence[str]) -> Table:
        value = self.get(name)
        return Table({} if value is None else value, self.key(name), allowed)

    def tables(self, name: str) -> list[tuple[str, object]]:
        """An array of tables (`[[name]]`), as (path, item) pairs; absent: empty."""
        value = self.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise Invalid(self.key(name), f"must be an array of tables ([[{name}]]), "
                                           f"not {kind_of(value)}")
        return [(f"{self.key(name)}[{i}]", item) for i, item in enumerate(value)]


def limited_value(key: str, value: object, lim: Limit) -> Any:
    """`value` if it is within `lim` (an int, or a float for a limit of numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (lim.integer and not isinstance(value, int)):
        what = "an integer" if lim.integer else "a number"
        raise Invalid(key, f"must be {what}, not {kind_of(value)} ({show(value)})")
    bad = lim.problem(value)
    if bad is not None:
        raise Invalid(key, bad)
    return value if lim.integer else float(value)


def int_in(key: str, value: object, lo: int, hi: int | None) -> int:
    """An integer in lo..hi where the bounds depend on other keys (enabled_vfs <= total_vfs)."""
    result: int = limited_value(key, value, Limit(lo, hi))
    return result


def mac_of(key: str, value: object) -> bytes:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        shown = show(value) if isinstance(value, str) else kind_of(value)
        raise Invalid(key, f'must be a MAC address like "02:ee:00:00:00:00", not {shown}')
    mac = bytes.fromhex(value.replace(":", ""))
    if mac[0] & 1:
        raise Invalid(key, f"{value} is a multicast address; a unicast one is needed "
                            "(the low bit of the first octet clear)")
    if not any(mac):
        raise Invalid(key, "00:00:00:00:00:00 is not a usable MAC address")
    return mac
