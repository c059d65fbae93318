"""Glucose Measurement 0x2A18 (Glucose service 0x1808, notify) and the Record Access Control Point 0x2A52.

A glucose meter stores readings; the gateway asks for "records with a sequence number >= N+1"
where N is the last one it holds, so nothing is fetched twice or missed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.ble.wire import DecodeError, DeviceDateTime, Reader, in_range
from gateway.readings import ClockQuality, DeviceFlag, Vital, VitalReading

SERVICE = "00001808-0000-1000-8000-00805f9b34fb"
MEASUREMENT = "00002a18-0000-1000-8000-00805f9b34fb"
CONTEXT = "00002a34-0000-1000-8000-00805f9b34fb"
RACP = "00002a52-0000-1000-8000-00805f9b34fb"

MG_DL_PER_KG_L = 100_000.0  # 1 kg/L = 1e6 mg / 10 dL
MG_DL_PER_MOL_L = 18_015.6  # glucose 180.156 g/mol
CONCENTRATION_RANGE = (0.0, 1000.0)  # any unit: a concentration is never negative

SAMPLE_TYPES = {
    1: "capillary whole blood",
    2: "capillary plasma",
    3: "venous whole blood",
    4: "venous plasma",
    5: "arterial whole blood",
    6: "arterial plasma",
    7: "undetermined whole blood",
    8: "undetermined plasma",
    9: "interstitial fluid",
    10: "control solution",
}
SAMPLE_LOCATIONS = {1: "finger", 2: "alternate site test", 3: "earlobe", 4: "control solution", 15: "not available"}
_CONTROL_SOLUTION_TYPE = 10
_CONTROL_SOLUTION_LOCATION = 4

# Sensor Status Annunciation.  The result is no measurement of the patient under a fault of the
# sensor or strip, too small a sample, a temperature out of the strip's range or an interrupted
# read (the specification's words: "for valid test/result").  Above or below what the device can
# process ("HI"/"LO"), the value is the device's own bound: kept, with a doubt, because an alarm
# on it is the right one (a true "LO" is lower still).  A time fault leaves the value good.
_STATUS_FLAGS: dict[int, DeviceFlag] = {
    1 << 0: DeviceFlag.BATTERY_LOW,
    1 << 1: DeviceFlag.SENSOR_FAULT,  # sensor malfunction
    1 << 2: DeviceFlag.INVALID,  # sample size insufficient
    1 << 3: DeviceFlag.SENSOR_FAULT,  # strip insertion error
    1 << 4: DeviceFlag.SENSOR_FAULT,  # strip type incorrect
    1 << 5: DeviceFlag.QUESTIONABLE,  # result above what the device can process
    1 << 6: DeviceFlag.QUESTIONABLE,  # result below what the device can process
    1 << 7: DeviceFlag.INVALID,  # temperature too high for a valid result
    1 << 8: DeviceFlag.INVALID,  # temperature too low for a valid result
    1 << 9: DeviceFlag.INVALID,  # read interrupted
    1 << 10: DeviceFlag.SENSOR_FAULT,  # general device fault in the sensor
    1 << 11: DeviceFlag.QUESTIONABLE,  # time fault
}


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    sequence: int
    base_time: DeviceDateTime
    time_offset_min: int | None = None
    concentration: float | None = None
    unit: str = "kg/L"  # "kg/L" or "mol/L", as sent
    sample_type: int | None = None
    sample_location: int | None = None
    status: int | None = None
    context_follows: bool = False

    @property
    def mg_dl(self) -> float | None:
        if self.concentration is None:
            return None
        factor = MG_DL_PER_KG_L if self.unit == "kg/L" else MG_DL_PER_MOL_L
        return round(self.concentration * factor, 1)

    @property
    def device_time(self) -> float | None:
        """Base time plus the user-facing offset, as naive-UTC seconds (None if the meter's date is unknown)."""
        base = self.base_time.as_naive_unix()
        if base is None:
            return None
        return base + 60.0 * (self.time_offset_min or 0)

    @property
    def control_solution(self) -> bool:
        return self.sample_type == _CONTROL_SOLUTION_TYPE or self.sample_location == _CONTROL_SOLUTION_LOCATION


def decode(data: bytes) -> GlucoseMeasurement:
    r = Reader(data)
    flags = r.u8("flags")
    seq = r.u16("sequence number")
    base = r.date_time("base time")
    offset = r.s16("time offset") if flags & 0x01 else None
    conc = stype = sloc = None
    if flags & 0x02:
        conc = in_range("concentration", r.sfloat("concentration"), *CONCENTRATION_RANGE)
        type_loc = r.u8("type and sample location")
        stype, sloc = type_loc & 0x0F, type_loc >> 4
    status = r.u16("sensor status annunciation") if flags & 0x08 else None
    return GlucoseMeasurement(
        sequence=seq,
        base_time=base,
        time_offset_min=offset,
        concentration=conc,
        unit="mol/L" if flags & 0x04 else "kg/L",
        sample_type=stype,
        sample_location=sloc,
        status=status,
        context_follows=bool(flags & 0x10),
    )


def status_flags(m: GlucoseMeasurement) -> frozenset[DeviceFlag]:
    out = {flag for bit, flag in _STATUS_FLAGS.items() if m.status is not None and m.status & bit}
    # A control-solution test checks the meter, not the patient: it must never count as a reading.
    if m.control_solution:
        out.add(DeviceFlag.NOT_PATIENT)
    return frozenset(out)


def to_vitals(
    m: GlucoseMeasurement,
    device_id: str,
    t: float,
    clock: ClockQuality,
    device_time: float | None = None,
) -> list[VitalReading]:
    if m.concentration is None and m.status is None:
        return []  # a record with neither value nor status carries nothing for the pipeline
    return [VitalReading(device_id, Vital.GLUCOSE, m.mg_dl, "mg/dL", t, clock, status_flags(m), device_time)]


# ---------------------------------------------------------------------------------------------
# Record Access Control Point
# ---------------------------------------------------------------------------------------------


class RacpOpcode(enum.IntEnum):
    REPORT_RECORDS = 1
    DELETE_RECORDS = 2
    ABORT = 3
    REPORT_NUMBER = 4
    NUMBER_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpResult(enum.IntEnum):
    SUCCESS = 1
    OPCODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


_OP_ALL = 1
_OP_GREATER_OR_EQUAL = 3
_OP_LAST = 6
_FILTER_SEQUENCE = 1


def racp_all_records() -> bytes:
    return bytes([RacpOpcode.REPORT_RECORDS, _OP_ALL])


def racp_records_from(sequence: int) -> bytes:
    """Records with sequence number >= ``sequence``."""
    if not 0 <= sequence <= 0xFFFF:
        raise ValueError("sequence number is a uint16")
    return bytes([RacpOpcode.REPORT_RECORDS, _OP_GREATER_OR_EQUAL, _FILTER_SEQUENCE]) + sequence.to_bytes(2, "little")


def racp_records_after(last_held: int | None) -> bytes:
    """The request for everything the gateway does not hold yet."""
    if last_held is None:
        return racp_all_records()
    if last_held >= 0xFFFF:
        raise ValueError("sequence numbers exhausted")
    return racp_records_from(last_held + 1)


def racp_last_record() -> bytes:
    """The newest record only: how the gateway notices a meter whose numbering started again."""
    return bytes([RacpOpcode.REPORT_RECORDS, _OP_LAST])


def racp_count_all() -> bytes:
    return bytes([RacpOpcode.REPORT_NUMBER, _OP_ALL])


def racp_abort() -> bytes:
    return bytes([RacpOpcode.ABORT, 0])


@dataclass(frozen=True, slots=True)
class RacpResponse:
    request_opcode: int | None  # for a response code
    result: RacpResult | None
    number_of_records: int | None = None  # for a number response

    @property
    def done(self) -> bool:
        """The procedure ended: success, nothing to report, or an error."""
        return self.result is not None


def decode_racp(data: bytes) -> RacpResponse:
    r = Reader(data)
    op = r.u8("opcode")
    operator = r.u8("operator")
    if operator != 0:
        raise DecodeError(f"RACP response operator must be 0 (null), got {operator}")
    if op == RacpOpcode.NUMBER_RESPONSE:
        return RacpResponse(None, None, r.u16("number of records"))
    if op == RacpOpcode.RESPONSE_CODE:
        req = r.u8("request opcode")
        code = r.u8("response code")
        try:
            result = RacpResult(code)
        except ValueError as e:
            raise DecodeError(f"unknown RACP response code {code}") from e
        return RacpResponse(req, result)
    raise DecodeError(f"not an RACP response opcode: {op}")
