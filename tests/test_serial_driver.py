"""Serial drivers end to end through the real serial stack: pseudo-terminals opened by pyserial.

A feeder writes fixture bytes into the pty master; the driver opens the slave path (through a
symlink standing in for /dev/serial/by-id/...) exactly as it would open a USB adapter.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.serial import link as link_module
from drivers.serial.decode_cli import decode_stream
from drivers.serial.driver import SerialDriver
from drivers.serial.ecg_frontend import FLAG_LEAD_OFF, FLAG_SATURATED, encode_frame
from drivers.serial.link import LinkLost, PortParams, SerialLink
from drivers.serial.settings import (
    ContecSettings,
    EcgStreamSettings,
    MasimoSettings,
    Nonin2Settings,
    Nonin8Settings,
    SerialSettings,
)
from gateway import plugins
from gateway.clock import SyncPolicy, SystemClock
from gateway.config.loader import ConfigError, parse_config_text
from gateway.driver_api import (
    DeviceContext,
    DriverConfigError,
    DriverConnectFailed,
    DriverDisconnected,
    registry,
)
from gateway.records import DeviceEvent, DeviceFlag, DeviceState, Reading, SampleBlock, Vital, VitalReading
from tests.serial_pty import FIX, Pty

ROOT = FIX.parent.parent


@pytest.fixture
def by_id(tmp_path: Path) -> Path:
    return tmp_path / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A10KX3-if00-port0"


@pytest.fixture
def pty(by_id: Path) -> Iterator[Pty]:
    p = Pty(by_id)
    yield p
    p.unplug()


def ctx(tmp_path: Path, device: str = "ox-1") -> DeviceContext:
    return DeviceContext(device, "p-1", SystemClock(SyncPolicy.ASSUME_SYNCED), tmp_path)


async def collect(
    driver: SerialDriver, until: int | None = None, stop: Any = None
) -> tuple[list[Reading], BaseException | None]:
    """Readings until the driver raises (returned), or ``until`` readings have come."""
    out: list[Reading] = []
    try:
        async for r in driver.readings():
            out.append(r)
            if until is not None and len(out) >= until:
                return out, None
            if stop is not None and stop(out):
                return out, None
    except DriverDisconnected as e:
        return out, e
    return out, None


def expected_readings(protocol: str, name: str) -> list[dict[str, Any]]:
    with (FIX / name).open("rb") as f:
        return list(decode_stream(protocol, f, waveform=True))


def vital_values(readings: list[Reading]) -> list[tuple[str, float | None]]:
    return [(r.vital.value, r.value) for r in readings if isinstance(r, VitalReading)]


def events(readings: list[Reading]) -> list[DeviceState]:
    return [r.state for r in readings if isinstance(r, DeviceEvent)]


async def test_nonin2_fixture_through_a_pty_then_unplug(tmp_path: Path, pty: Pty) -> None:
    data = (FIX / "nonin2_patient-a_220s.bin").read_bytes()
    # The device goes on streaming: the next packet's sync frame confirms the last whole packet
    # (a packet is emitted once the sync after its 25 frames has come: ``PacketAssembler``).
    fed = data + data[:5]
    settings = Nonin2Settings(id="ox-1", port=str(pty.link))
    async with SerialDriver(ctx(tmp_path), settings) as drv:

        async def feeder() -> None:
            await pty.feed(fed, 375, 0.01)  # one second of device output every 10 ms
            await asyncio.sleep(0.2)
            pty.unplug()

        task = asyncio.create_task(feeder())
        readings, exc = await collect(drv)
        await task
    assert isinstance(exc, DriverDisconnected) and "hung up" in str(exc)
    ref = expected_readings("nonin2", "nonin2_patient-a_220s.bin")
    assert vital_values(readings) == [(o["vital"], o["value"]) for o in ref if o["kind"] == "vital"]
    assert events(readings) == [DeviceState.SENSOR_OFF, DeviceState.SENSOR_ON]
    blocks = [r for r in readings if isinstance(r, SampleBlock)]
    assert sum(len(b.samples) for b in blocks) == len(fed) // 5
    assert not any(b.gap_before for b in blocks)
    assert [b.first_index for b in blocks] == [25 * k for k in range(len(blocks))]
    assert drv.stats.dropped_bytes == 0


async def test_real_pacing_vitals_are_dated_at_reception(tmp_path: Path, pty: Pty) -> None:
    # One second of Nonin #2 at its own pace: one 5-byte frame every 1/75 s, and the sync frame of
    # the next packet, which confirms the third.
    data = (FIX / "nonin2_patient-a_220s.bin").read_bytes()[: 76 * 5]
    clock = SystemClock(SyncPolicy.ASSUME_SYNCED)
    async with SerialDriver(ctx(tmp_path), Nonin2Settings(id="ox-1", port=pty.link.as_posix())) as drv:
        t0 = clock.now()
        task = asyncio.create_task(pty.feed(data, 5, 1 / 75))
        readings, _ = await collect(drv, stop=lambda out: len(vital_values(out)) >= 6)
        await task
    vitals = [r for r in readings if isinstance(r, VitalReading)]
    assert all(t0 <= r.time <= clock.now() for r in vitals)
    # Packets come three times a second: the third packet is about 2/3 s after the first.
    assert 0.4 < vitals[-1].time - vitals[0].time < 1.2


async def test_unplug_then_absent_then_replug_gives_a_new_session(tmp_path: Path, by_id: Path) -> None:
    settings = Nonin2Settings(id="ox-1", port=str(by_id))
    data = (FIX / "nonin2_patient-a_220s.bin").read_bytes()
    driver = SerialDriver(ctx(tmp_path), settings)

    first = Pty(by_id)
    async with driver:
        await first.write(data[:3000])
        readings, _ = await collect(driver, stop=lambda out: len(vital_values(out)) >= 4)
        # Unplug mid-frame: the rest of the session ends with a typed disconnect.
        await first.write(data[3000:3003])
        first.unplug()
        _, exc = await collect(driver)
    assert isinstance(exc, DriverDisconnected)

    with pytest.raises(DriverConnectFailed, match="no such device"):
        async with driver:
            pass

    second = Pty(by_id)  # re-enumerated: another /dev/pts node behind the same by-id name
    try:
        async with driver:
            await second.write(data[:3000])
            readings2, _ = await collect(driver, stop=lambda out: len(vital_values(out)) >= 4)
    finally:
        second.unplug()
    assert vital_values(readings2)[:4] == vital_values(readings)[:4]
    # The new session starts its sample index at 0 with a fresh decoder: nothing glued from the old port.
    blocks = [r for r in readings2 if isinstance(r, SampleBlock)]
    assert blocks[0].first_index == 0 and not blocks[0].gap_before


async def test_silence_and_garbage_only_end_the_session(tmp_path: Path, pty: Pty) -> None:
    settings = Nonin2Settings(id="ox-1", port=str(pty.link), silence_timeout_s=0.3)
    async with SerialDriver(ctx(tmp_path), settings) as drv:
        # A device at the wrong baud rate: bytes arrive, frames never do.
        task = asyncio.create_task(pty.feed(bytes(range(256)) * 40, 64, 0.02))
        readings, exc = await collect(drv)
        task.cancel()
    assert events(readings) == []
    assert isinstance(exc, DriverDisconnected) and "no valid nonin2 frame for 0.3 s" in str(exc)
    # Bytes kept coming all along: it is the absence of frames that ended the session.
    assert drv.stats.frames == 0 and drv.stats.dropped_bytes > 0
    assert f"({drv.stats.dropped_bytes} bytes dropped" in str(exc) or drv.stats.dropped_bytes >= 128


async def test_second_reader_of_the_same_port_is_refused(tmp_path: Path, pty: Pty) -> None:
    settings = Nonin2Settings(id="ox-1", port=str(pty.link))
    async with SerialDriver(ctx(tmp_path), settings):
        with pytest.raises(DriverConnectFailed, match="lock"):
            async with SerialDriver(ctx(tmp_path, "ox-2"), settings.model_copy(update={"id": "ox-2"})):
                pass


async def test_not_a_serial_port_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "not-a-tty"
    f.write_text("x")
    with pytest.raises(DriverConfigError):
        async with SerialDriver(ctx(tmp_path), Nonin2Settings(id="ox-1", port=str(f))):
            pass


async def test_ecg_faults_fixture_gaps_and_mid_frame_unplug(tmp_path: Path, pty: Pty) -> None:
    data = (FIX / "ecgstream_faults.bin").read_bytes()
    async with SerialDriver(ctx(tmp_path, "ecg-1"), EcgStreamSettings(id="ecg-1", port=str(pty.link))) as drv:

        async def feeder() -> None:
            await pty.feed(data, 1000, 0.005)
            await asyncio.sleep(0.2)
            pty.unplug()

        task = asyncio.create_task(feeder())
        readings, exc = await collect(drv)
        await task
    assert isinstance(exc, DriverDisconnected)
    blocks = [r for r in readings if isinstance(r, SampleBlock)]
    assert all(b.channel == "ecg" and b.unit == "uV" and b.sample_rate_hz == 360 for b in blocks)
    assert [b.first_index for b in blocks if b.gap_before] == [121 * 18, 201 * 18, 304 * 18]
    ref = [o for o in expected_readings("ecgstream", "ecgstream_faults.bin") if o["kind"] == "samples"]
    assert [b.samples.tolist() for b in blocks] == [o["samples"] for o in ref]
    assert drv.stats.dropped_bytes == sum(o["count"] for o in expected_readings("ecgstream", "ecgstream_faults.bin")
                                          if o["kind"] == "dropped") - 25  # fmt: skip
    # (the last 25 bytes are a frame cut by the unplug: still pending, never a reading)


async def test_ecg_lead_off_frames_through_a_pty_give_flagged_blocks(tmp_path: Path, pty: Pty) -> None:
    # 0.1 s frames: 5 clean, 10 lead off, 5 saturated (the lead back, the amplifier settling), 5 clean.
    bits = [0] * 5 + [FLAG_LEAD_OFF] * 10 + [FLAG_SATURATED] * 5 + [0] * 5
    data = b"".join(encode_frame(seq, np.full(36, seq), 360, 5000, flags=b) for seq, b in enumerate(bits))
    async with SerialDriver(ctx(tmp_path, "ecg-1"), EcgStreamSettings(id="ecg-1", port=str(pty.link))) as drv:
        task = asyncio.create_task(pty.feed(data, 500, 0.002))
        readings, exc = await collect(drv, stop=lambda got: sum(isinstance(r, SampleBlock) for r in got) == len(bits))
        await task
    assert exc is None
    blocks = [r for r in readings if isinstance(r, SampleBlock)]
    assert [b.samples[0] for b in blocks] == [5.0 * seq for seq in range(len(bits))]  # every frame, in order
    lead, sat = frozenset({DeviceFlag.LEAD_OFF}), frozenset({DeviceFlag.SATURATED})
    assert [b.flags for b in blocks] == [frozenset()] * 5 + [lead] * 10 + [sat] * 5 + [frozenset()] * 5
    assert events(readings) == [DeviceState.SENSOR_OFF, DeviceState.SENSOR_ON]
    off, on = (r for r in readings if isinstance(r, DeviceEvent))
    assert off.detail == "lead off" and off.time == blocks[5].first_sample_time
    assert on.time == blocks[15].first_sample_time


async def test_masimo_and_nonin8_through_ptys(tmp_path: Path, by_id: Path) -> None:
    cases: list[tuple[SerialSettings, str]] = [
        (MasimoSettings(id="m", port=str(by_id)), "masimo_faults.txt"),
        (Nonin8Settings(id="n8", port=str(by_id)), "nonin8_patient-a.bin"),
    ]
    for settings, name in cases:
        pty = Pty(by_id)
        data = (FIX / name).read_bytes()
        try:
            async with SerialDriver(ctx(tmp_path, settings.id), settings) as drv:

                async def feeder(p: Pty = pty, d: bytes = data) -> None:
                    await p.feed(d, 512, 0.002)
                    await asyncio.sleep(0.2)
                    p.unplug()

                task = asyncio.create_task(feeder())
                readings, exc = await collect(drv)
                await task
        finally:
            pty.unplug()
        assert isinstance(exc, DriverDisconnected)
        proto = settings.driver  # type: ignore[attr-defined]
        ref = expected_readings(proto, name)
        ref_vitals = [(o["vital"], o["value"]) for o in ref if o["kind"] == "vital"]
        got = vital_values(readings)
        if proto == "masimo":
            ref_vitals = ref_vitals[: len(got)]  # the line cut by the unplug arrives only with finish()
        assert got == ref_vitals
        assert len(got) > 300


@pytest.fixture
async def contec_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A serial-over-TCP bridge (like ser2net) that sends 30 s of Contec output and hangs up."""
    data = (FIX / "contec_patient-a_220s.bin").read_bytes()
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # pyserial flushes what is pending while it opens the URL (as for a real port): start after that.
        await asyncio.sleep(0.2)
        for i in range(0, len(data), 600):
            writer.write(data[i : i + 600])
            await writer.drain()
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, done


async def test_contec_over_socket_url(tmp_path: Path, contec_server: tuple[int, asyncio.Event]) -> None:
    port, _ = contec_server
    settings = ContecSettings(id="c", port=f"socket://127.0.0.1:{port}")
    async with SerialDriver(ctx(tmp_path, "c"), settings) as drv:
        readings, exc = await collect(drv)
    assert isinstance(exc, DriverDisconnected) and "hung up" in str(exc)
    ref = expected_readings("contec", "contec_patient-a_220s.bin")
    assert vital_values(readings) == [(o["vital"], o["value"]) for o in ref if o["kind"] == "vital"]
    assert sum(len(r.samples) for r in readings if isinstance(r, SampleBlock)) == 30 * 60


async def test_refused_socket_is_connect_failed(tmp_path: Path) -> None:
    with pytest.raises(DriverConnectFailed):
        async with SerialDriver(ctx(tmp_path), ContecSettings(id="c", port="socket://127.0.0.1:1")):
            pass


# -- configuration -------------------------------------------------------------------------------

YAML = """
gateway: {{id: hub-1}}
upstream: {{url: "mqtt://127.0.0.1:1883"}}
patients:
  - id: p-1
    devices:
{devices}
"""


def load(devices: str, tmp_path: Path) -> Any:
    return parse_config_text(YAML.format(devices=devices), file=tmp_path / "gw.yaml")


def test_drivers_are_registered_under_their_protocol_names() -> None:
    names = set(registry())
    assert {"nonin2", "nonin7", "nonin8", "masimo", "contec", "ecgstream"} <= names
    assert {"nonin2", "nonin7", "nonin8", "masimo", "contec", "ecgstream"} <= set(plugins.names(plugins.DECODERS_GROUP))


def test_yaml_devices_validate_with_protocol_defaults(tmp_path: Path) -> None:
    cfg = load(
        "      - {id: ox, driver: nonin2, port: /dev/serial/by-id/usb-Nonin-if00}\n"
        "      - {id: c50, driver: contec, port: /dev/ttyUSB1, vitals_every: 30}\n"
        "      - {id: ecg, driver: ecgstream, port: 'socket://10.0.0.7:7000', silence_timeout_s: 2}\n",
        tmp_path,
    )
    ox, c50, ecg = cfg.patients[0].devices
    assert (ox.baud, ox.format) == (9600, "8N1")
    assert (c50.baud, c50.format, c50.vitals_every) == (19200, "8O1", 30)
    assert (ecg.baud, ecg.silence_timeout_s) == (115200, 2)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("{id: ox, driver: nonin2, port: ttyUSB0}", "absolute device path"),
        ("{id: ox, driver: nonin2, port: /dev/ttyUSB0, baud: 96000}", "not a standard baud rate"),
        ("{id: ox, driver: nonin2, port: /dev/ttyUSB0, format: 9X1}", "data bits 5-8"),
        ("{id: ox, driver: nonin2, port: 'socket://host'}", "needs host:port"),
        ("{id: ox, driver: nonin2, port: 'http://host:1'}", "not supported"),
        ("{id: ox, driver: nonin2, port: /dev/ttyUSB0, silence_timeout_s: 0}", "must be more than 0"),
        ("{id: ox, driver: nonin2, port: /dev/ttyUSB0, speed: 3}", "speed"),
    ],
)
def test_yaml_errors_are_clear(tmp_path: Path, device: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(f"      - {device}\n", tmp_path)
    assert message in str(e.value)


# -- decode CLI ----------------------------------------------------------------------------------


def test_decode_cli_entry_point_prints_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    fn = plugins.load(plugins.DECODERS_GROUP, "nonin2")
    assert fn is not None
    assert fn([str(FIX / "nonin2_faults.bin"), "--no-waveform"]) == 0
    out, err = capsys.readouterr()
    objs = [json.loads(line) for line in out.splitlines()]
    dropped = [o for o in objs if o["kind"] == "dropped"]
    faults = json.loads((FIX / "nonin2_faults.json").read_text())["faults"]
    assert [d["offset"] for d in dropped] == [f["offset"] for f in faults if f["kind"] != "lose_frames"]
    assert {o["kind"] for o in objs} == {"vital", "samples", "event", "dropped"}
    assert "bytes dropped" in err


def test_decode_cli_reads_stdin_through_the_gateway_command() -> None:
    vector = bytes.fromhex("018101008301800148CA01800161E301800130B2") + bytes.fromhex("0180010082") * 21
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())", "decode", "nonin2", "-"],
        input=vector,
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    objs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(o["vital"], o["value"]) for o in objs if o["kind"] == "vital"] == [("spo2", 97.0), ("pulse_rate", 72.0)]


def test_decode_cli_frames_view_shows_status_bytes() -> None:
    objs = list(decode_stream("contec", io.BytesIO(bytes.fromhex("C53C064861853C460562")), frames=True))
    assert [(o["type"], o["pulse_rate"], o["beep"]) for o in objs] == [
        ("ContecPacket", 72, True),
        ("ContecPacket", 133, False),
    ]


def test_vital_units() -> None:
    objs = list(decode_stream("masimo", io.BytesIO((FIX / "masimo_patient-a_100s.txt").read_bytes()[:2000])))
    units = {(o["vital"], o["unit"]) for o in objs if o["kind"] == "vital"}
    assert units == {(Vital.SPO2.value, "%"), (Vital.PULSE_RATE.value, "/min"), (Vital.PERFUSION_INDEX.value, "%")}


async def test_ports_without_a_descriptor_are_read_by_a_helper_thread() -> None:
    # pyserial's loop:// (like rfc2217://) has no file descriptor to watch.
    link = await SerialLink.open(PortParams("loop://", 9600))
    try:
        assert link._thread is not None
        vector = bytes.fromhex("C53C064861") * 40
        await asyncio.to_thread(link.port.write, vector)
        got = b""
        async with asyncio.timeout(5):
            while len(got) < len(vector):
                got += await link.read()
        assert got == vector
    finally:
        await link.close()
    with pytest.raises(LinkLost):
        await link.read()


async def test_a_consumer_that_stops_reading_pauses_the_port_not_memory(
    pty: Pty, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_module, "MAX_PENDING", 4096)
    link = await SerialLink.open(PortParams(str(pty.link), 9600))
    data = bytes(range(256)) * 200  # 51 kB: far beyond what the link may hold for a stalled reader
    writer = asyncio.create_task(pty.write(data))
    try:
        async with asyncio.timeout(10):
            while not link._paused:  # noqa: ASYNC110 - a reader-side state with nothing to await
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert link._pending <= 4096 + link_module.READ_SIZE
        assert not writer.done()  # the writer is held back by the full tty buffer, not by our memory
        got = b""
        async with asyncio.timeout(10):
            while len(got) < len(data):
                got += await link.read()
        assert got == data  # the pause lost nothing: the tty buffered it
    finally:
        writer.cancel()
        await link.close()


@pytest.mark.parametrize("pending_read", [False, True])
async def test_an_unplug_reads_the_same_whether_a_read_was_pending_or_not(pty: Pty, pending_read: bool) -> None:
    # Linux gives EIO when the pty master is gone before the read and EOF when it goes during one;
    # a technician reading the journal must see one event, not two depending on timing.
    link = await SerialLink.open(PortParams(str(pty.link), 9600))
    try:
        await pty.write(b"\x01\x02")
        async with asyncio.timeout(5):
            assert await link.read() == b"\x01\x02"
            if pending_read:
                reader = asyncio.create_task(link.read())
                await asyncio.sleep(0.05)
                pty.unplug()
                with pytest.raises(LinkLost) as lost:
                    await reader
            else:
                pty.unplug()
                with pytest.raises(LinkLost) as lost:
                    await link.read()
        assert str(lost.value) == f"{link.port.name} hung up (unplugged, or its other end closed)"
    finally:
        await link.close()


async def test_a_read_error_that_is_not_a_hangup_keeps_its_own_message(
    pty: Pty, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = await SerialLink.open(PortParams(str(pty.link), 9600))

    class BrokenReads:  # the link's own view of ``os``; the event loop keeps the real one
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def read(fd: int, n: int) -> bytes:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    try:
        monkeypatch.setattr(link_module, "os", BrokenReads())
        await pty.write(b"\x01")
        async with asyncio.timeout(5):
            with pytest.raises(LinkLost, match=r"read error on .*Bad file descriptor"):
                await link.read()
    finally:
        monkeypatch.undo()
        await link.close()
