"""The broker, step by step as the uplink meets it: DNS, TCP, TLS (chain, host name, expiry), MQTT CONNECT.

Each step stops the ones after it when it fails (no TLS without TCP), so a broken link gives one ✗
naming the first thing wrong instead of four.  Nothing is published: the CONNECT is
``gateway.uplink.probe_connect`` (the uplink owns MQTT), with a client id of its own.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway import tls
from gateway.checks import Check
from gateway.failover import Endpoint
from gateway.uplink import probe_connect

TIMEOUT_S = 5.0
EXPIRY_WARN_DAYS = 14

# MQTT 5 CONNACK reason codes worth a sentence of their own.
_CONNACK: dict[int, tuple[str, str]] = {
    0x85: ("the broker refuses this client id", "set upstream.client_id to an id the broker accepts"),
    0x86: (
        "bad user name or password",
        "check upstream.username and the password file (one line, the password only)",
    ),
    0x87: (
        "not authorised (a wrong password, or an identity the broker does not allow)",
        "check upstream.username and the password file; if both are right, ask the broker's administrator to "
        "allow this hub",
    ),
    0x88: ("the broker is unavailable", "try again later; ask the broker's administrator"),
    0x89: ("the broker is busy", "try again later"),
    0x8A: ("this client is banned", "ask the broker's administrator"),
    0x8C: ("bad authentication method", "the broker expects another way to log in"),
}


@dataclass(frozen=True)
class Identity:
    client_id: str
    username: str | None
    password: str | None
    ca_file: Any
    cert_file: Any
    key_file: Any
    crl_file: Any = None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


async def check_broker(ep: Endpoint, ident: Identity, *, now: float) -> list[Check]:
    name = f"{ep.host}:{ep.port}"
    out: list[Check] = []
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, TimeoutError) as e:
        out.append(
            Check(
                False,
                f"broker DNS {ep.host}",
                f"the name does not resolve ({e})",
                "check the host name in upstream.url, and this hub's DNS (resolvectl status)",
            )
        )
        return out
    addresses = sorted({str(i[4][0]) for i in infos})
    out.append(Check(True, f"broker DNS {ep.host}", ", ".join(addresses)))

    try:
        async with asyncio.timeout(TIMEOUT_S):
            _, writer = await asyncio.open_connection(ep.host, ep.port)
    except ConnectionRefusedError:
        out.append(
            Check(
                False,
                f"broker TCP {name}",
                "connection refused: nothing listens on that port",
                "check the port in upstream.url (mqtts:// is usually 8883) and that the broker runs",
            )
        )
        return out
    except (OSError, TimeoutError) as e:
        out.append(
            Check(
                False,
                f"broker TCP {name}",
                f"no connection within {TIMEOUT_S:g} s ({e or type(e).__name__})",
                "a firewall may block the port: ask the site's network administrator to allow it outbound",
            )
        )
        return out
    writer.close()
    out.append(Check(True, f"broker TCP {name}", "connection accepted"))

    context: tls.WatchedContext | None = None
    if ep.tls:
        try:
            context = tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, ident.crl_file)
        except (OSError, ssl.SSLError) as e:
            out.append(
                Check(
                    False,
                    f"TLS {name}",
                    f"the CA, certificate, key or CRL file cannot be used ({e})",
                    "check ca_file, cert_file, key_file and crl_file: PEM files, the key matching the certificate",
                )
            )
            return out
        tls_check = await _handshake(ep, context, now)
        out.append(tls_check)
        if not tls_check.ok:
            return out

    probe = await probe_connect(
        ep.host,
        ep.port,
        client_id=f"{ident.client_id}-doctor",
        username=ident.username,
        password=ident.password,
        # A fresh context: the handshake above used the first one.
        tls_context=tls.client_context(ident.ca_file, ident.cert_file, ident.key_file, ident.crl_file)
        if ep.tls else None,
        timeout_s=TIMEOUT_S,
    )
    who = f"user {ident.username!r}" if ident.username else "no user name"
    if probe.ok:
        out.append(Check(True, f"MQTT CONNECT {name}", f"accepted ({who})"))
    else:
        words, fix = _CONNACK.get(probe.reason_code or -1, (probe.error, "see the broker's log for why"))
        code = f" (0x{probe.reason_code:02x})" if probe.reason_code is not None else ""
        out.append(Check(False, f"MQTT CONNECT {name}", f"refused: {words}{code} ({who})", fix))
    return out


async def _handshake(ep: Endpoint, context: tls.WatchedContext, now: float) -> Check:
    name = f"TLS {ep.host}:{ep.port}"
    try:
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=context, server_hostname=ep.host)
    except (OSError, TimeoutError) as e:
        failure = tls.failure_of(context) or (tls.classify(e) if isinstance(e, OSError) else None)
        if failure is None:
            return Check(False, name, f"handshake did not finish ({e or type(e).__name__})", "see the broker's log")
        return Check(False, name, failure.message, _tls_fix(failure.cause))
    try:
        # TLS 1.3: a broker refusing our certificate says so just after the handshake; wait for it.
        try:
            async with asyncio.timeout(0.5):
                await reader.read(1)
        except TimeoutError:
            pass
        except OSError as e:
            refused = tls.failure_of(context) or tls.classify(e)
            return Check(False, name, refused.message, _tls_fix(refused.cause))
        late = tls.failure_of(context)
        if late is not None:
            return Check(False, name, late.message, _tls_fix(late.cause))
        ssl_obj = writer.get_extra_info("ssl_object")
        cert = ssl_obj.getpeercert() if ssl_obj is not None else None
        version = ssl_obj.version() if ssl_obj is not None else "?"
    finally:
        writer.close()
    if not cert:
        return Check(True, name, f"{version}, host name verified")
    expires = ssl.cert_time_to_seconds(cert["notAfter"])
    issuer = dict(x[0] for x in cert.get("issuer", ())).get("commonName", "?")
    days = (expires - now) / 86400
    detail = (
        f"{version}, chain to {issuer!r} verified, host name {ep.host} matches, "
        f"certificate valid until {_when(expires)}"
    )
    if days < EXPIRY_WARN_DAYS:
        return Check(
            False,
            name,
            detail + f" — expires in {days:.0f} days",
            "ask the broker's administrator to renew its certificate",
        )
    return Check(True, name, detail)


def _tls_fix(cause: tls.TlsCause) -> str:
    c = tls.TlsCause
    return {
        c.SERVER_UNKNOWN_CA: "ca_file must be the CA that signed the broker's certificate (ask the site for it)",
        c.SERVER_CERT_EXPIRED: "check this hub's date (timedatectl); else the broker's certificate must be renewed",
        c.SERVER_CERT_NOT_YET_VALID: "check this hub's date (timedatectl): NTP must have set it",
        c.HOSTNAME_MISMATCH: "use the host name the broker's certificate names in upstream.url",
        c.CLIENT_CERT_REQUIRED: "install this hub's certificate and key (cert_file, key_file)",
        c.CLIENT_CERT_UNKNOWN_CA: "this hub's certificate must be issued by the CA the broker trusts",
        c.CLIENT_CERT_EXPIRED: "this hub's certificate has expired: install a renewed one (cert_file, key_file)",
        c.CLIENT_CERT_REVOKED: "this hub's certificate was revoked: ask the site for a new one",
        c.CLIENT_CERT_REFUSED: "the broker does not accept this hub's certificate: ask its administrator",
        c.NOT_TLS: "the port does not speak TLS: use the broker's mqtts:// port (usually 8883)",
        c.PROTOCOL_VERSION: "the broker must offer TLS 1.2 or newer",
        c.SERVER_CERT_REVOKED: "the broker's certificate is revoked: its administrator must install a new one",
        c.CRL_EXPIRED: "install a fresh revocation list from the site CA at crl_file (or check this hub's date)",
        c.CRL_MISSING: "crl_file must hold the revocation list of the CA that signed the broker's certificate",
        c.CRL_INVALID: "crl_file's list must be signed by the broker's CA (and this hub's date must be right)",
    }.get(cause, "see the broker's log")
