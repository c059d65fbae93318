"""The configuration schema: one YAML file, validated by these models.

Every model forbids unknown fields so a typo is an error, not a silently ignored setting.
Devices are a discriminated union on ``driver``; the union is built at load time from the
installed drivers' settings models (``gateway.driver_api.registry``), so adding a driver package
adds its settings to the schema without the gateway importing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model, field_validator, model_validator

from gateway import failover, mqtt_limits
from gateway.clock import SyncPolicy
from gateway.config import upstream as upstream_rules
from gateway.config.billing import BillingSection
from gateway.config.errors import ValueErrorAt
from gateway.config.processing import AlarmSection, ProcessingSection, VitalLimits, check_vital_names
from gateway.config.zones import ZoneName
from gateway.driver_api import ID_PATTERN, DriverSpec, registry

_ID = ID_PATTERN
Ident = Annotated[str, Field(pattern=_ID, description="Letters, digits, '-', '_', '.'; up to 64 chars")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Model):
    id: Ident = Field(description="This hub's id: appears in every record key and topic")
    site: str = Field("", description="Free text shown in status (ward, home, ...)")


class ClockSection(_Model):
    sync: SyncPolicy = Field(
        SyncPolicy.AUTO,
        description="auto: ask the kernel whether NTP has synchronised the clock; "
        "assume_synced: hosts with an RTC; assume_unsynced: testing",
    )


class UpstreamSection(_Model):
    url: str = Field(
        description="mqtts://host[:port] (TLS, port 8883 by default); mqtt://host[:port] only to a loopback "
        "broker or with insecure_plaintext. No user or password in the URL."
    )
    insecure_plaintext: bool = Field(
        False, description="Allow mqtt:// (unencrypted) to a broker on another machine; every connect logs an error"
    )
    topic_prefix: str = Field("iomt", description="First topic level(s), e.g. 'iomt' -> iomt/<gateway>/...")
    client_id: str | None = Field(None, description="MQTT client id; default: the gateway id")
    username: str | None = None
    password_file: Path | None = Field(
        None, description="File holding the password (systemd credential); never put it in the config"
    )
    ca_file: Path | None = Field(
        None, description="The CA that signs the broker's certificate; only it is trusted. Default: the system store"
    )
    crl_file: Path | None = Field(
        None, description="Certificate revocation list(s) (PEM) from the CA of ca_file: a revoked broker certificate "
        "is refused; once the list is past its next update the broker is refused too, until a fresh one is installed"
    )
    cert_file: Path | None = Field(None, description="Client certificate (mTLS); its CN must be the gateway id")
    key_file: Path | None = Field(None, description="Client private key (mTLS)")
    keepalive_s: int = Field(30, ge=5, le=3600)
    inflight: int = Field(32, ge=1, le=1000, description="Unacknowledged publishes at once")
    publish_timeout_s: float = Field(10.0, gt=0, le=300)
    backoff_max_s: float = Field(300.0, ge=1, le=3600, description="Reconnect backoff cap")
    # Fleet-scale settings (see gateway/failover.py and gateway/mqtt_limits.py).
    failover_urls: list[str] = Field(
        [], description="Other brokers (nodes of the same cluster, or a standby), tried in turn after url"
    )
    return_to_primary_s: float | None = Field(
        None, ge=1, le=86_400, description="When on a failover broker, check url this often and go back once it "
        "answers; unset: stay where the link works",
    )  # fmt: skip
    reconnect_spread_s: float = Field(
        10.0, ge=0, le=3600, description="The first reconnect after a lost link waits a random 0..this many "
        "seconds (at most backoff_max_s), so a fleet does not return to a restarted broker all at once",
    )  # fmt: skip
    max_record_bytes: int = Field(
        mqtt_limits.MAX_RECORD_BYTES, ge=1024, le=16 * 1024 * 1024,
        description="Largest record (JSON) accepted; a larger one is refused when it is created, with a "
        "technical alarm. Default: AWS IoT Core's 128 KB",
    )  # fmt: skip
    outage_warning_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Broker unreachable this long: a warning with the cause, repeated at a slowing interval",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return upstream_rules.check_url(v)

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, v: str) -> str:
        return upstream_rules.check_topic_prefix(v)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str | None) -> str | None:
        return None if v is None else upstream_rules.check_client_id(v)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def plaintext_remote(self) -> bool:
        """Unencrypted to another machine, on url or a failover url (allowed only by ``insecure_plaintext``)."""
        return not self.tls and not all(
            upstream_rules.is_loopback(urlsplit(u).hostname or "") for u in (self.url, *self.failover_urls)
        )

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_limits(cls, v: str) -> str:
        problem = mqtt_limits.topic_prefix_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _failover_urls(self) -> UpstreamSection:
        seen = {failover.endpoint(self.url)}
        for i, url in enumerate(self.failover_urls):
            try:
                upstream_rules.check_url(url)  # the same rules as url (no credentials, TLS policy)
                upstream_rules.check_plaintext(url, self.insecure_plaintext)
                ep = failover.endpoint(url)
            except ValueError as e:
                raise ValueErrorAt(str(e), ("failover_urls", i)) from None
            if ep.tls != self.tls:
                raise ValueErrorAt("must use the same scheme as url (one TLS setting for all)", ("failover_urls", i))
            if ep in seen:
                raise ValueErrorAt(f"{ep} is listed twice", ("failover_urls", i))
            seen.add(ep)
        return self

    @property
    def urls(self) -> list[str]:
        """The primary, then the failover brokers."""
        return [self.url, *self.failover_urls]

    @model_validator(mode="after")
    def _mtls_pair(self) -> UpstreamSection:
        upstream_rules.check_plaintext(self.url, self.insecure_plaintext)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together (mutual TLS)")
        if (self.cert_file or self.ca_file or self.crl_file) and not self.tls:
            raise ValueError("ca_file/cert_file/crl_file need an mqtts:// url")
        return self


class QuotaSection(_Model):
    alarm: int = Field(100_000, ge=100, description="Max pending alarm records (never dropped: intake stops instead)")
    evidence: int = Field(20_000, ge=100, description="Max pending alarm evidence strips; oldest dropped beyond")
    billing: int = Field(1_000_000, ge=100, description="Max pending billing records (never dropped)")
    summary: int = Field(500_000, ge=100, description="Max pending summaries; oldest dropped beyond")
    status: int = Field(100_000, ge=100, description="Max pending status records; oldest dropped beyond")


class StorageSection(_Model):
    path: Path = Field(Path("/var/lib/iomt-gateway"), description="State directory (outbox, device state)")
    quotas: QuotaSection = QuotaSection()
    min_free_mb: int = Field(
        64,
        ge=0,
        description="Free-disk floor: below it only alarms/billing are taken (until the disk is full); "
        "new summaries, status and evidence are dropped and the oldest make room",
    )
    commit_interval_ms: int = Field(200, ge=10, le=5000, description="Group commit: at most one per interval")
    commit_max_records: int = Field(2000, ge=1, le=100_000, description="...or when this many are waiting")
    keyring: Path | None = Field(
        None,
        description="Keyring file (outbox encryption, checkpoint signing); default /etc/iomt-gateway/keyring. "
        "A systemd credential named iomt-gateway-keyring takes precedence",
    )
    quarantine_days: int = Field(30, ge=1, le=3650, description="Damaged outbox files moved aside are deleted after")


class LoggingSection(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: pretty on a terminal, JSON lines with syslog prefix otherwise"
    )


class PatientOverrides(_Model):
    limits: dict[str, VitalLimits] = Field(default_factory=dict, description="Replace the default limits per vital")

    @field_validator("limits")
    @classmethod
    def _known_vitals(cls, v: dict[str, VitalLimits]) -> dict[str, VitalLimits]:
        return check_vital_names(v)


class PatientBase(_Model):
    id: Ident = Field(description="Pseudonym sent upstream — never a name")
    timezone: ZoneName | None = Field(
        None,
        description="IANA zone used to cut billing days and to read device clocks that have no zone of "
        "their own; default: billing.timezone, else the gateway's",
    )
    alarms: PatientOverrides = PatientOverrides()
    devices: list[Any]  # replaced by the discriminated union in ``build_config_model``


class ConfigBase(_Model):
    gateway: GatewaySection
    clock: ClockSection = ClockSection()
    upstream: UpstreamSection
    storage: StorageSection = StorageSection()
    logging: LoggingSection = LoggingSection()
    processing: ProcessingSection = ProcessingSection()
    alarms: AlarmSection = AlarmSection()
    billing: BillingSection = BillingSection()
    patients: list[Any]
    # Set by the loader (``gateway.config.loader.loaded_from``): relative paths resolve against its folder.
    _source_file: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_ids(self) -> ConfigBase:
        seen_p: dict[str, int] = {}
        seen_d: dict[str, tuple[int, int]] = {}
        seen_link: dict[tuple[str, str], tuple[int, int, str]] = {}
        for i, p in enumerate(self.patients):
            if p.id in seen_p:
                first_p = ("patients", seen_p[p.id], "id")
                raise ValueErrorAt(f"patient id {p.id!r} is used twice", ("patients", i, "id"), first_p)
            seen_p[p.id] = i
            for j, d in enumerate(p.devices):
                if d.id in seen_d:
                    fi, fj = seen_d[d.id]
                    raise ValueErrorAt(
                        f"device id {d.id!r} is used twice (device ids are gateway-wide)",
                        ("patients", i, "devices", j, "id"),
                        ("patients", fi, "devices", fj, "id"),
                    )
                seen_d[d.id] = (i, j)
                link = d.exclusive_link()
                if link is None:
                    continue
                field, what, value = link
                if (what, value) in seen_link:
                    fi, fj, other = seen_link[(what, value)]
                    raise ValueErrorAt(
                        f"{what} {getattr(d, field)!r} is already used by device {other!r}: one device per {what}",
                        ("patients", i, "devices", j, field),
                        ("patients", fi, "devices", fj, field),
                    )
                seen_link[(what, value)] = (i, j, d.id)
        return self


def build_config_model(specs: dict[str, DriverSpec] | None = None) -> type[ConfigBase]:
    """The full config model, with ``devices`` a discriminated union of the installed drivers."""
    specs = registry() if specs is None else specs
    if not specs:
        raise RuntimeError("no device drivers are installed (entry-point group iomt_gateway.drivers)")
    settings = tuple(spec.settings for spec in specs.values())
    device_union: Any = settings[0] if len(settings) == 1 else Union[settings]  # noqa: UP007
    device_type = Annotated[device_union, Field(discriminator="driver")]
    patient = create_model(
        "Patient",
        __base__=PatientBase,
        devices=(list[device_type], Field(min_length=1, description="This patient's devices")),
    )
    return create_model(
        "GatewayConfig",
        __base__=ConfigBase,
        patients=(list[patient], Field(min_length=1)),
    )
