"""Emulated health devices built on ``Peripheral``: byte-exact to ../shared/reference/ble-health-profiles.md."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from drivers.ble import blood_pressure, glucose, heart_rate, polar_pmd
from drivers.ble.device_time import CURRENT_TIME, CURRENT_TIME_SERVICE
from drivers.ble.driver import BATTERY_LEVEL
from drivers.ble.ieee11073 import encode_sfloat
from tests.ble.peripheral import CharSpec, Peripheral, ServiceSpec

BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9b34fb"


def date_time(dt: datetime) -> bytes:
    return dt.year.to_bytes(2, "little") + bytes([dt.month, dt.day, dt.hour, dt.minute, dt.second])


def current_time(dt: datetime) -> bytes:
    return date_time(dt) + bytes([dt.isoweekday(), 0, 0])


def battery(pct: int) -> ServiceSpec:
    return ServiceSpec(BATTERY_SERVICE, [CharSpec(BATTERY_LEVEL, ["read"], bytes([pct]))])


def heart_rate_strap(adapter: str, battery_pct: int = 80) -> Peripheral:
    return Peripheral(
        "HRM-Strap",
        adapter,
        [ServiceSpec(heart_rate.SERVICE, [CharSpec(heart_rate.MEASUREMENT, ["notify"])]), battery(battery_pct)],
    )


def hr_payload(bpm: int, rr_1024: list[int]) -> bytes:
    # Contact supported and detected, RR intervals present.
    return bytes([0x16, bpm]) + b"".join(rr.to_bytes(2, "little") for rr in rr_1024)


def bp_cuff(adapter: str, device_now: datetime) -> Peripheral:
    """A cuff whose clock reads ``device_now`` (it may be wrong); indicates when subscribed."""
    return Peripheral(
        "BP-Cuff",
        adapter,
        [
            ServiceSpec(blood_pressure.SERVICE, [CharSpec(blood_pressure.MEASUREMENT, ["indicate"])]),
            ServiceSpec(CURRENT_TIME_SERVICE, [CharSpec(CURRENT_TIME, ["read"], current_time(device_now))]),
        ],
    )


def bp_payload(sys_: int, dia: int, mean: int, pulse: int, at: datetime, user: int | None = None) -> bytes:
    sf = [encode_sfloat(v, 0).to_bytes(2, "little") for v in (sys_, dia, mean)]
    flags = 0x06 | (0x08 if user is not None else 0)
    out = bytes([flags]) + b"".join(sf) + date_time(at) + encode_sfloat(pulse, 0).to_bytes(2, "little")
    return out if user is None else out + bytes([user])


def glucose_payload(seq: int, at: datetime, mg_dl: int) -> bytes:
    # kg/L with exponent -5: mantissa = mg/dL; capillary plasma from a finger.
    conc = encode_sfloat(mg_dl, -5).to_bytes(2, "little")
    return bytes([0x02]) + seq.to_bytes(2, "little") + date_time(at) + conc + bytes([0x12])


class GlucoseMeter:
    """Stored records served through the RACP: ``01 01`` all, ``01 03 01 NN NN`` from NN on."""

    def __init__(self, adapter: str, device_now: datetime) -> None:
        self.records: dict[int, bytes] = {}
        self.requests: list[bytes] = []
        self.peripheral = Peripheral(
            "Glucose-Meter",
            adapter,
            [
                ServiceSpec(
                    glucose.SERVICE,
                    [
                        CharSpec(glucose.MEASUREMENT, ["notify"]),
                        CharSpec(glucose.RACP, ["write", "indicate"], on_write=self._racp),
                    ],
                ),
                ServiceSpec(CURRENT_TIME_SERVICE, [CharSpec(CURRENT_TIME, ["read"], current_time(device_now))]),
            ],
        )

    def add(self, seq: int, at: datetime, mg_dl: int) -> None:
        self.records[seq] = glucose_payload(seq, at, mg_dl)

    def factory_reset(self) -> None:
        """Memory erased, numbering starts again at 1."""
        self.records.clear()

    async def _racp(self, request: bytes) -> None:
        self.requests.append(request)
        if request == glucose.racp_all_records():
            wanted = sorted(self.records)
        elif request == glucose.racp_last_record():
            wanted = sorted(self.records)[-1:]
        elif request[:3] == bytes([1, 3, 1]) and len(request) == 5:
            start = int.from_bytes(request[3:5], "little")
            wanted = sorted(s for s in self.records if s >= start)
        else:
            self.peripheral.notify(glucose.RACP, bytes([6, 0, request[0] if request else 0, 2]))
            return
        # Answer after the write returns, as a meter does.
        asyncio.get_running_loop().create_task(self._send(wanted))

    async def _send(self, seqs: list[int]) -> None:
        await asyncio.sleep(0.01)
        for s in seqs:
            self.peripheral.notify(glucose.MEASUREMENT, self.records[s])
            await asyncio.sleep(0.005)
        code = glucose.RacpResult.SUCCESS if seqs else glucose.RacpResult.NO_RECORDS_FOUND
        self.peripheral.notify(glucose.RACP, bytes([6, 0, 1, code]))


class PolarH10:
    """PMD service: answers the ECG start on the control point, then streams frames of 73 samples."""

    FRAME = 73

    def __init__(self, adapter: str) -> None:
        self.started = asyncio.Event()
        self.peripheral = Peripheral(
            "Polar H10 12345678",
            adapter,
            [
                ServiceSpec(
                    polar_pmd.SERVICE,
                    [
                        CharSpec(polar_pmd.CONTROL_POINT, ["read", "write", "indicate"], on_write=self._control),
                        CharSpec(polar_pmd.DATA, ["notify"]),
                    ],
                )
            ],
        )
        self.sensor_ns = 800_000_000 * 10**9  # sensor clock somewhere in 2025

    def _control(self, request: bytes) -> None:
        ok = request == polar_pmd.START_ECG
        self.peripheral.notify(polar_pmd.CONTROL_POINT, bytes([0xF0, request[0], 0, 0 if ok else 3]))
        if ok:
            self.started.set()

    def frame(self, first_sample: int = 0, skip: bool = False, samples: list[int] | None = None) -> bytes | None:
        """Next frame (a ramp from ``first_sample``, or these ``FRAME`` samples in uV); with ``skip``
        the frame is lost in the air."""
        self.sensor_ns += round(self.FRAME * 1e9 / 130)
        if skip:
            return None
        if samples is None:
            samples = [(first_sample + i) * 10 for i in range(self.FRAME)]
        body = b"".join(s.to_bytes(3, "little", signed=True) for s in samples)
        return b"\x00" + self.sensor_ns.to_bytes(8, "little") + b"\x00" + body


def naive(dt: datetime) -> float:
    """A device wall-clock time read as UTC, as ``DeviceDateTime.as_naive_unix`` does."""
    return dt.replace(tzinfo=UTC).timestamp()
