"""TLS for the uplink: the client ``SSLContext``, and what a refused handshake means, in words.

The context (``client_context``):

* TLS 1.2 at least (1.3 whenever the broker has it: OpenSSL negotiates the highest both share);
* the broker's certificate must chain to a trusted CA and name the host in the URL (``check_hostname``);
* ``ca_file`` given: that CA, and only it, is trusted ("pinned": a certificate from any public CA
  is refused); not given: the system store;
* ``cert_file`` + ``key_file``: the client certificate for mutual TLS;
* ``crl_file``: revocation lists; the broker's own certificate is checked against its CA's list
  (``VERIFY_CRL_CHECK_LEAF``).  A list past its next update, or none from that CA, refuses the
  broker: a hub that cannot tell whether the broker was revoked does not hand it patient data (its
  records wait in the outbox).  The file is read at every connection attempt, so a refreshed list
  takes effect at the next reconnect without a restart.

Why a handshake failed is easy to lose: aiomqtt turns connect errors into ``MqttError(str(e))``
without the original, and when the *broker* refuses our certificate (TLS 1.3 sends that verdict
after the handshake) paho only logs the alert and reports "connection lost".  So the context's
sockets keep the last ``ssl.SSLError`` they raised (``WatchedContext.last_error``: Python's
documented ``SSLContext.sslsocket_class`` hook, no library internals), and ``classify`` maps it to a
``TlsCause`` from OpenSSL's typed fields (``verify_code``, ``reason``), not from message text.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsCause(enum.StrEnum):
    """Why a TLS connection to the broker failed; the value is the ``cause=`` logged."""

    SERVER_UNKNOWN_CA = "server_unknown_ca"
    SERVER_CERT_EXPIRED = "server_cert_expired"
    SERVER_CERT_NOT_YET_VALID = "server_cert_not_yet_valid"
    SERVER_CERT_REVOKED = "server_cert_revoked"
    CRL_EXPIRED = "crl_expired"
    CRL_MISSING = "crl_missing"
    CRL_INVALID = "crl_invalid"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    SERVER_CERT_INVALID = "server_cert_invalid"
    CLIENT_CERT_REQUIRED = "client_cert_required"
    CLIENT_CERT_UNKNOWN_CA = "client_cert_unknown_ca"
    CLIENT_CERT_EXPIRED = "client_cert_expired"
    CLIENT_CERT_REVOKED = "client_cert_revoked"
    CLIENT_CERT_REFUSED = "client_cert_refused"
    PROTOCOL_VERSION = "protocol_version"
    NOT_TLS = "not_tls"
    OTHER = "tls_error"


EXPLANATION: dict[TlsCause, str] = {
    TlsCause.SERVER_UNKNOWN_CA: "the broker's certificate is not signed by the trusted CA (ca_file)",
    TlsCause.SERVER_CERT_EXPIRED: "the broker's certificate has expired (or this hub's clock is wrong)",
    TlsCause.SERVER_CERT_NOT_YET_VALID: "the broker's certificate is not valid yet (or this hub's clock is wrong)",
    TlsCause.SERVER_CERT_REVOKED: "the broker's certificate has been revoked",
    TlsCause.CRL_EXPIRED: "the revocation list (crl_file) is past its next update: install a fresh one from the "
    "site CA (or this hub's clock is wrong)",
    TlsCause.CRL_MISSING: "crl_file holds no revocation list from the CA that signed the broker's certificate",
    TlsCause.CRL_INVALID: "the revocation list (crl_file) is not signed by the broker's CA or is not valid yet",
    TlsCause.HOSTNAME_MISMATCH: "the broker's certificate is not issued for the host name in the url",
    TlsCause.SERVER_CERT_INVALID: "the broker's certificate is invalid",
    TlsCause.CLIENT_CERT_REQUIRED: "the broker requires a client certificate (cert_file/key_file)",
    TlsCause.CLIENT_CERT_UNKNOWN_CA: "the broker does not trust the CA that signed this hub's certificate",
    TlsCause.CLIENT_CERT_EXPIRED: "the broker refused this hub's certificate: it has expired",
    TlsCause.CLIENT_CERT_REVOKED: "the broker refused this hub's certificate: it has been revoked",
    TlsCause.CLIENT_CERT_REFUSED: "the broker refused this hub's certificate",
    TlsCause.PROTOCOL_VERSION: "the broker offers no TLS version >= 1.2",
    TlsCause.NOT_TLS: "the broker closed the connection during the TLS handshake (not a TLS port? mqtt:// port?)",
    TlsCause.OTHER: "TLS failed",
}

# X509_V_ERR_* codes (openssl/x509_vfy.h) as reported in SSLCertVerificationError.verify_code.
_VERIFY_CODES: dict[int, TlsCause] = {
    2: TlsCause.SERVER_UNKNOWN_CA,  # unable to get issuer certificate
    9: TlsCause.SERVER_CERT_NOT_YET_VALID,
    10: TlsCause.SERVER_CERT_EXPIRED,
    18: TlsCause.SERVER_UNKNOWN_CA,  # self-signed certificate
    19: TlsCause.SERVER_UNKNOWN_CA,  # self-signed certificate in chain
    20: TlsCause.SERVER_UNKNOWN_CA,  # unable to get local issuer certificate
    21: TlsCause.SERVER_UNKNOWN_CA,  # unable to verify the first certificate
    3: TlsCause.CRL_MISSING,  # unable to get certificate CRL
    8: TlsCause.CRL_INVALID,  # CRL signature failure
    11: TlsCause.CRL_INVALID,  # CRL is not yet valid
    12: TlsCause.CRL_EXPIRED,
    23: TlsCause.SERVER_CERT_REVOKED,
    62: TlsCause.HOSTNAME_MISMATCH,
    64: TlsCause.HOSTNAME_MISMATCH,  # IP address mismatch
}

# OpenSSL reason names of alerts the broker sends when it refuses us (SSLError.reason).
_ALERTS: dict[str, TlsCause] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": TlsCause.CLIENT_CERT_REQUIRED,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": TlsCause.CLIENT_CERT_REQUIRED,
    "TLSV1_ALERT_UNKNOWN_CA": TlsCause.CLIENT_CERT_UNKNOWN_CA,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": TlsCause.CLIENT_CERT_EXPIRED,
    "SSLV3_ALERT_CERTIFICATE_REVOKED": TlsCause.CLIENT_CERT_REVOKED,
    "SSLV3_ALERT_BAD_CERTIFICATE": TlsCause.CLIENT_CERT_REFUSED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": TlsCause.CLIENT_CERT_REFUSED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": TlsCause.CLIENT_CERT_REFUSED,
    "TLSV1_ALERT_ACCESS_DENIED": TlsCause.CLIENT_CERT_REFUSED,
    "TLSV1_ALERT_PROTOCOL_VERSION": TlsCause.PROTOCOL_VERSION,
    "UNSUPPORTED_PROTOCOL": TlsCause.PROTOCOL_VERSION,
    "WRONG_VERSION_NUMBER": TlsCause.NOT_TLS,
    "RECORD_LAYER_FAILURE": TlsCause.NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": TlsCause.NOT_TLS,
    "UNEXPECTED_EOF_WHILE_READING": TlsCause.NOT_TLS,
}


@dataclass(frozen=True)
class TlsFailure:
    cause: TlsCause
    detail: str  # OpenSSL's own words, for the technician who wants them

    @property
    def message(self) -> str:
        return f"TLS refused: {EXPLANATION[self.cause]} ({self.cause.value})"


class _WatchedSocket(ssl.SSLSocket):
    """Remembers the last real TLS error on its context (not the non-blocking want-read/write),
    and a connection closed in the middle of the handshake."""

    def _note(self, e: OSError) -> None:
        if not isinstance(e, ssl.SSLWantReadError | ssl.SSLWantWriteError):
            ctx = self.context
            if isinstance(ctx, WatchedContext):
                ctx.last_error = e

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as e:  # SSLError included; a reset here is a peer that does not speak TLS
            self._note(e)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as e:
            self._note(e)
            raise

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except ssl.SSLError as e:
            self._note(e)
            raise


class WatchedContext(ssl.SSLContext):
    """An ``SSLContext`` whose sockets report their last TLS error in ``last_error``.  Make one
    per connection attempt, so an error seen belongs to that attempt."""

    last_error: OSError | None = None
    sslsocket_class = _WatchedSocket


def client_context(ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
                   crl_file: Path | None = None) -> WatchedContext:
    """The uplink's context (module docstring).  Raises ``OSError``/``ssl.SSLError`` for a file that
    is missing, unreadable or not a certificate/key/CRL (and a key that does not match its certificate)."""
    ctx = WatchedContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    ctx.minimum_version = MINIMUM_VERSION
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if crl_file is not None:
        before = ctx.cert_store_stats()["crl"]
        ctx.load_verify_locations(cafile=str(crl_file))  # PEM CRLs load through the same call
        if ctx.cert_store_stats()["crl"] == before:
            # certificates only, or an empty file: checking against nothing would refuse every broker
            raise ssl.SSLError(f"{crl_file}: no certificate revocation list (PEM 'X509 CRL') in it")
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return ctx


def classify(error: OSError) -> TlsFailure:
    """The cause of a TLS error raised by a handshake or by a read just after it."""
    if not isinstance(error, ssl.SSLError):  # only recorded from the handshake: reset or EOF
        return TlsFailure(TlsCause.NOT_TLS, f"{type(error).__name__}: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        cause = _VERIFY_CODES.get(code, TlsCause.SERVER_CERT_INVALID)
        return TlsFailure(cause, f"certificate verify failed: {error.verify_message} (X509 error {code})")
    reason = str(getattr(error, "reason", "") or "")
    return TlsFailure(_ALERTS.get(reason, TlsCause.OTHER), reason or type(error).__name__)


def failure_of(ctx: ssl.SSLContext | None) -> TlsFailure | None:
    """What went wrong with TLS on ``ctx``'s connection, if anything did."""
    if isinstance(ctx, WatchedContext) and ctx.last_error is not None:
        return classify(ctx.last_error)
    return None
