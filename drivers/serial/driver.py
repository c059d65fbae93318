"""The serial driver: one class for every protocol of ``drivers.serial.protocols``, chosen by ``driver:``.

bytes (link) -> frames (pure decoder) -> readings (pure translator, host reception time).  A
session ends with ``DriverDisconnected`` on a read error, EOF, or no valid frame for the silence
timeout; the supervisor reopens the port (the same by-id path after USB re-enumeration).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from drivers.serial.contec import ContecTranslator
from drivers.serial.framing import Dropped, FramerStats
from drivers.serial.link import LinkLost, PortAbsent, PortConfigError, PortParams, PortUnusable, SerialLink
from drivers.serial.protocol import Decoder, ProtocolInfo, Translator
from drivers.serial.protocols import PROTOCOLS
from drivers.serial.settings import ContecSettings, SerialSettings
from gateway.driver_api import (
    DeviceContext,
    Driver,
    DriverConfigError,
    DriverConnectFailed,
    DriverDisconnected,
)
from gateway.readings import Reading

DROP_LOG_INTERVAL_S = 10.0


class SerialDriver(Driver):
    settings: SerialSettings

    def __init__(self, ctx: DeviceContext, settings: SerialSettings) -> None:
        super().__init__(ctx, settings)
        name = getattr(settings, "driver", "")
        if name not in PROTOCOLS:
            raise DriverConfigError(f"no serial protocol named {name!r}")
        self.protocol: ProtocolInfo = PROTOCOLS[name]
        self.decoder: Decoder = self.protocol.make_decoder()
        self.translator: Translator = self._make_translator()
        self._link: SerialLink | None = None

    def _make_translator(self) -> Translator:
        tr = self.protocol.make_translator(self.ctx.device_id)
        if isinstance(tr, ContecTranslator) and isinstance(self.settings, ContecSettings):
            tr.vitals_every = self.settings.vitals_every
        return tr

    @property
    def stats(self) -> FramerStats:
        return self.decoder.stats

    def _scrub(self, text: object) -> str:
        """``text`` with the port's by-id name (it embeds the adapter's serial number) as its tag."""
        out = str(text)
        for identifier in self.settings.hardware_ids:
            out = out.replace(identifier, self.ctx.tag(identifier))
        return out

    @property
    def silence_timeout_s(self) -> float:
        return self.settings.silence_timeout_s or self.protocol.default_silence_s

    async def connect(self) -> None:
        await self.close()  # a second connect must not leak the first port
        s = self.settings
        params = PortParams(s.port, s.baud, s.format, s.exclusive)
        try:
            self._link = await SerialLink.open(params)
        except PortConfigError as e:
            raise DriverConfigError(self._scrub(e), reason="port_unusable") from e
        except PortAbsent as e:
            raise DriverConnectFailed(self._scrub(e), reason="port_absent") from e
        except PortUnusable as e:
            raise DriverConnectFailed(self._scrub(e), reason="port_unusable") from e
        # A new session starts from a clean decoder: bytes of the old link are not glued on.
        self.decoder = self.protocol.make_decoder()
        self.translator = self._make_translator()

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def readings(self) -> AsyncIterator[Reading]:
        link = self._link
        if link is None:
            raise DriverDisconnected("not connected")
        loop = asyncio.get_running_loop()
        clock = self.ctx.clock
        s = self.settings
        silence = self.silence_timeout_s
        # The supervisor reports the CONNECTED event; the port details go to the log.
        port = self._scrub(s.port)
        self.ctx.log.info("serial_port_open", port=port, baud=s.baud, format=s.format, protocol=self.protocol.name)
        deadline = loop.time() + silence
        next_drop_log = loop.time()
        logged_drops = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await link.read()
            except TimeoutError:
                for r in self.translator.flush():
                    yield r
                raise DriverDisconnected(
                    f"no valid {self.protocol.name} frame for {silence:g} s "
                    f"({self.stats.dropped_bytes} bytes dropped; check baud/format)",
                    reason="no_valid_frames",
                ) from None
            except LinkLost as e:
                for r in self.translator.flush():
                    yield r
                raise DriverDisconnected(self._scrub(e), reason="link_lost") from e
            now = clock.now()
            frames_before = self.decoder.stats.frames
            items = self.decoder.feed(chunk)
            if self.decoder.stats.frames != frames_before:
                deadline = loop.time() + silence
            if any(isinstance(it, Dropped) for it in items) and loop.time() >= next_drop_log:
                st = self.stats
                self.ctx.log.warning(
                    "serial_bytes_dropped",
                    device=self.ctx.device_id,
                    protocol=self.protocol.name,
                    dropped_bytes=st.dropped_bytes,
                    since_last_log=st.dropped_bytes - logged_drops,
                    frames=st.frames,
                )
                logged_drops = st.dropped_bytes
                next_drop_log = loop.time() + DROP_LOG_INTERVAL_S
            for r in self.translator.translate(items, now, clock.quality()):
                yield r
