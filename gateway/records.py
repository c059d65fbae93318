"""Outbound records: what the gateway sends upstream — summaries, alarms, device status and
billable-service records.  Pydantic models, because they are serialised to JSON, published, and
documented as a JSON Schema for whoever consumes them.

Every outbound record carries the envelope fields: schema version, gateway id, patient pseudonym,
UTC time with a clock-quality flag, and an idempotency ``key`` fixed when the record is created.

The readings drivers yield live in ``gateway.readings``; they are re-exported here so that code
handling both (the pipeline, tests) can keep one import.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from gateway.readings import (
    VITAL_UNITS,
    ClockQuality,
    DeviceEvent,
    DeviceFlag,
    DeviceState,
    Reading,
    SampleBlock,
    Vital,
    VitalReading,
)

__all__ = [
    "PRIORITY",
    "SCHEMA_VERSION",
    "VITAL_UNITS",
    "AlarmEvent",
    "AlarmRecord",
    "BillingRecord",
    "BillingStatus",
    "ClockQuality",
    "DayEvidence",
    "DeviceEvent",
    "DeviceFlag",
    "DeviceState",
    "DeviceStatusRecord",
    "EvidenceRecord",
    "OutboundRecord",
    "Reading",
    "RecordKind",
    "SampleBlock",
    "Severity",
    "SummaryRecord",
    "Vital",
    "VitalReading",
    "utc_from_unix",
]

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------
# Outbound records (pipeline -> outbox -> uplink)
# --------------------------------------------------------------------------------------------


class RecordKind(enum.StrEnum):
    """Also the outbox priority class; ``PRIORITY`` gives the order (lower = sent first)."""

    ALARM = "alarm"
    EVIDENCE = "evidence"  # the waveform strip behind an alarm (gateway.evidence)
    BILLING = "billing"
    SUMMARY = "summary"
    STATUS = "status"
    # written by the outbox itself: chain positions dropped by quota (see gateway.chain)
    TOMBSTONE = "tombstone"


PRIORITY: dict[RecordKind, int] = {
    RecordKind.ALARM: 0,
    RecordKind.EVIDENCE: 1,
    RecordKind.BILLING: 2,
    RecordKind.SUMMARY: 3,
    RecordKind.STATUS: 4,
    RecordKind.TOMBSTONE: 5,
}


# pydantic serializes a Literal of an enum member through its generic fallback (~3.6 us per record,
# a third of model_dump_json for a summary), and an enum field through the member's ``value``, a
# Python-level property on 3.11.  str() of a StrEnum member is its value: the same JSON, in C.
_AS_VALUE = PlainSerializer(str, return_type=str, when_used="json")


def utc_from_unix(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    key: str = Field(description="Idempotency key fixed at creation: '<gateway>:<sequence>' or a service key")
    gateway_id: str
    patient: str = Field(description="Patient pseudonym from the config; never a name")
    time: datetime = Field(description="UTC time the record describes")
    clock: Annotated[ClockQuality, _AS_VALUE]


class SummaryRecord(_Envelope):
    kind: Annotated[Literal[RecordKind.SUMMARY], _AS_VALUE] = RecordKind.SUMMARY
    vital: Annotated[Vital, _AS_VALUE]
    unit: str
    period_start: datetime
    period_end: datetime
    count: int = Field(ge=0, description="Valid values in the period")
    rejected: int = Field(0, ge=0, description="Values rejected as artefact or flagged invalid")
    min: float | None
    mean: float | None
    max: float | None
    quality: float = Field(ge=0.0, le=1.0, description="Share of the period with valid signal")
    devices: list[str]


class AlarmEvent(enum.StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Severity(enum.StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class AlarmRecord(_Envelope):
    kind: Annotated[Literal[RecordKind.ALARM], _AS_VALUE] = RecordKind.ALARM
    alarm_id: str = Field(description="Stable id shared by the raise and the clear of one alarm")
    event: AlarmEvent
    condition: str = Field(description="e.g. 'spo2_low', 'heart_rate_high', 'lead_off', 'outbox_full'")
    technical: bool = Field(description="True for equipment/gateway alarms, False for physiologic ones")
    severity: Severity
    vital: Vital | None = None
    value: float | None = None
    threshold: float | None = None
    device: str | None = None
    detail: str = ""


class DeviceStatusRecord(_Envelope):
    kind: Annotated[Literal[RecordKind.STATUS], _AS_VALUE] = RecordKind.STATUS
    device: str
    driver: str
    state: DeviceState
    detail: str = ""
    battery_pct: float | None = None


class BillingStatus(enum.StrEnum):
    ACCRUING = "accruing"
    ELIGIBLE = "eligible"
    BILLABLE = "billable"
    NOT_BILLABLE = "not_billable"


class DayEvidence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    date: str = Field(description="Local calendar date in the patient's time zone, YYYY-MM-DD")
    readings: int
    first: datetime
    last: datetime
    devices: list[str]
    clock_flags: list[ClockQuality] = Field(default_factory=list)


class BillingRecord(_Envelope):
    kind: Annotated[Literal[RecordKind.BILLING], _AS_VALUE] = RecordKind.BILLING
    service_key: str = Field(description="Deterministic: same patient, code and period -> same key")
    version: int = Field(ge=1, description="Increases with each status transition of the same service")
    code: str
    code_system: str = "http://www.ama-assn.org/go/cpt"
    status: BillingStatus
    period_start: str
    period_end: str
    timezone: str
    qualifying_days: int
    dates: list[str]
    devices: list[str]
    evidence: list[DayEvidence] = Field(default_factory=list)
    reason: str = Field("", description="Why this transition happened, e.g. 'superseded by 99454'")


class EvidenceRecord(_Envelope):
    """The waveform strip behind an alarm: from ``pre`` seconds before its raise to a few after.

    ``data`` is base64 of zlib-compressed little-endian integer deltas (``sample_format`` i2 or i4):
    the first value is the first sample, each next one the difference to the previous; a sample is
    ``value * resolution`` in ``unit``.  ``gateway.evidence_codec`` encodes and decodes it."""

    kind: Annotated[Literal[RecordKind.EVIDENCE], _AS_VALUE] = RecordKind.EVIDENCE
    alarm_id: str = Field(description="The alarm this strip belongs to")
    condition: str
    device: str
    channel: str = Field(description="Waveform channel, e.g. 'ecg', 'ecg2', 'pleth'")
    sample_rate_hz: float = Field(gt=0)
    unit: str = Field(description="Unit of value * resolution, e.g. 'mV'")
    resolution: float = Field(gt=0, description="Size of one integer step in ``unit``")
    start_time: datetime = Field(description="UTC time of the first sample")
    n_samples: int = Field(ge=1)
    raise_index: int = Field(ge=0, description="Sample of the strip at which the alarm was raised")
    onset_index: int | None = Field(None, description="Sample where the condition began, when known")
    beats: list[int] = Field(default_factory=list, description="Samples of the strip where beats were detected")
    pace: list[int] = Field(
        default_factory=list, description="Samples of the strip where the device marked a pacemaker's pulse"
    )
    encoding: Literal["zlib-delta-b64"] = "zlib-delta-b64"
    sample_format: Literal["i2", "i4"]
    data: str


OutboundRecord = Annotated[
    SummaryRecord | AlarmRecord | DeviceStatusRecord | BillingRecord | EvidenceRecord,
    Field(discriminator="kind"),
]
"""The union the outbox stores and the uplink publishes (``kind`` selects the model)."""

