"""The contract between the gateway and its device drivers, and the registry that finds them.

A driver is used as ``async with driver:`` (connect; leave no half state when that fails) and
yields typed readings from ``driver.readings()``.  When the link drops it raises
``DriverDisconnected``; it never retries by itself — the supervisor owns retries and backoff.

Drivers are found by name through the ``iomt_gateway.drivers`` entry-point group.  Each entry
names a ``DriverSpec``: the pydantic settings model (used by the config loader to build the
discriminated union on ``driver``) and the import path of the driver class, imported lazily so
that validating a config never pulls in bleak or pyserial.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field

from gateway import device_tags
from gateway.clock import Clock
from gateway.readings import Reading

ENTRY_POINT_GROUP = "iomt_gateway.drivers"


class DriverError(Exception):
    """Base of the errors a driver raises.  ``retryable`` tells the supervisor whether to retry.

    ``reason`` is a short code (``[a-z_]+``) that goes upstream in the device's status record
    instead of the message, which is for the journal (and may quote a library's words).  Each class
    has a default; a driver may give a finer one: ``DriverDisconnected("...", reason="no_data")``.
    """

    retryable: ClassVar[bool] = True
    reason: str = "driver_error"

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        if reason is not None:
            self.reason = reason


class DriverDisconnected(DriverError):
    """The link to the device dropped (unplug, out of range, EOF, silence beyond the timeout)."""

    reason = "disconnected"


class DriverConnectFailed(DriverError):
    """The device could not be reached now (absent, busy, not advertising)."""

    reason = "connect_failed"


class DriverConfigError(DriverError):
    """The settings cannot work (e.g. the port path is not a character device).  Retried slowly."""

    reason = "config_error"


class DriverFinished(DriverError):
    """A finite source (a recording played once) has nothing more to give."""

    retryable = False
    reason = "finished"


# Every id in the config (gateway, patients, devices): they become file names, topic levels and
# record keys, so no '/', '+', '#', spaces or control characters, and no leading '.' or '-'.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DriverSettings(BaseModel):
    """Base of every driver's settings model.  Subclasses add ``driver: Literal["name"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Letters, digits, '-', '_', '.'; up to 64 chars")
    """Device id, unique within the gateway (used in records, logs and topics)."""

    no_data_minutes: float | None = Field(
        None,
        ge=0,
        description="Technical 'no data' alarm after this long without valid data from this device; "
        "default: alarms.no_data_minutes for streaming devices, never for spot-check devices; 0: never",
    )

    def exclusive_link(self) -> tuple[str, str, str] | None:
        """A link only one device entry may use, as (settings field, what it is in words, normalised
        value) — a serial port, a BLE address — or None.  The config refuses two devices on one."""
        return None

    @property
    def streams(self) -> bool:
        """True for devices that send data continuously; spot-check devices (a BP cuff, a scale)
        override this so that a day without a measurement is not a technical alarm."""
        return True

    @property
    def hardware_ids(self) -> tuple[str, ...]:
        """Identifiers of the physical device in these settings (a BLE address, a serial by-id
        name) that must not leave the driver in clear; see ``gateway.device_tags``."""
        return ()


async def _accepted_at_once() -> None:
    """Checkpoint of a context with no durable sink behind it (tests, tools)."""


@dataclass(frozen=True)
class DeviceContext:
    """What a driver may know about where it runs — nothing about MQTT or SQLite."""

    device_id: str
    patient: str
    clock: Clock
    state_dir: Path
    """A directory private to this device for small persistent state (e.g. last glucose seq)."""
    base_dir: Path = Path(".")
    """Directory that relative paths in the settings are resolved against (the config's folder)."""
    log: Any = field(default_factory=structlog.get_logger)
    tag: Callable[[str], str] = field(default_factory=lambda: device_tags.current().tag)
    """The device tag of a hardware identifier (``gateway.device_tags``): what a driver writes in
    its logs and messages instead of a BLE address or a serial by-id name."""
    timezone: tzinfo | None = None
    """The patient's zone: a device's own clock, set to local wall time with no zone of its own,
    is read there (None: read as UTC, for tools)."""
    checkpoint: Callable[[], Awaitable[None]] = field(default=_accepted_at_once)
    """Wait until everything this device's readings produced so far is accepted (on disk).  A driver
    that remembers its place in the device's own store (e.g. the last glucose record fetched) saves
    that place only after this returns, so a crash in between fetches the record again rather than
    losing it."""


class Driver(abc.ABC):
    """Base class for drivers.  Subclasses implement ``connect``, ``close`` and ``readings``."""

    def __init__(self, ctx: DeviceContext, settings: DriverSettings) -> None:
        self.ctx = ctx
        self.settings = settings

    @property
    def reports_own_connection(self) -> bool:
        """True for drivers whose session outlives the device's link (BLE devices that only connect
        when they have a reading): they report CONNECTED per visit themselves, so the supervisor does
        not announce the session's start as a connection."""
        return False

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the link.  On failure, release anything half-built and raise a DriverError."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the link.  Safe to call twice and after a failed connect."""

    @abc.abstractmethod
    def readings(self) -> AsyncIterator[Reading]:
        """Yield readings until the link drops (raise DriverDisconnected) or the source ends."""

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


DriverFactory = Callable[[DeviceContext, Any], Driver]


@dataclass(frozen=True)
class DriverSpec:
    """Registry entry: a driver's name, its settings model and where its class lives."""

    name: str
    settings: type[DriverSettings]
    factory: str
    """``module:attribute`` of the Driver subclass, imported only when a session starts."""
    summary: str = ""

    def load(self) -> DriverFactory:
        module_name, _, attr = self.factory.partition(":")
        module = importlib.import_module(module_name)
        factory: DriverFactory = getattr(module, attr)
        return factory


@cache
def registry() -> dict[str, DriverSpec]:
    """All installed drivers by name.  A driver package that fails to import is logged and skipped:
    one broken plug-in must not take the whole gateway down."""
    specs: dict[str, DriverSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = ep.load()
        except Exception as e:
            structlog.get_logger().error("driver_plugin_broken", entry_point=ep.name, error=repr(e))
            continue
        if not isinstance(spec, DriverSpec):
            structlog.get_logger().error("driver_plugin_broken", entry_point=ep.name, error="not a DriverSpec")
            continue
        specs[spec.name] = spec
    return dict(sorted(specs.items()))
