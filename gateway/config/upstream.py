"""What an ``upstream`` section may say: broker URL policy, topic prefix and client id rules.

Plain functions the models call (and tests call directly).  The policy:

* ``mqtts://`` anywhere.  ``mqtt://`` (no encryption) only to a loopback broker (``localhost``,
  127.0.0.0/8, ``::1``), where the traffic never leaves the machine; to any other host only with
  ``insecure_plaintext: true``, and then the uplink logs an error on every connect.
* No credentials in the URL.  A password there would be copied into every place the URL goes
  (logs, ``check-config`` output, bug reports); it must come from ``password_file``.  Errors about
  such a URL never repeat it.
* ``topic_prefix``: one or more levels separated by ``/``; no empty level, no ``+``, ``#`` or NUL
  (wildcards and terminators are not allowed in a topic name), no leading ``$`` (reserved for the
  broker's own topics such as ``$SYS``), at most ``MAX_PREFIX_BYTES`` UTF-8 bytes.
* ``client_id``: the characters of every other id here (letters, digits, ``-``, ``_``, ``.``) and at
  most ``MAX_CLIENT_ID_BYTES``.  MQTT 3.1.1 and 5 only *guarantee* 1-23 alphanumerics; this gateway
  speaks MQTT 5 only, and the MQTT 5 brokers in use (Mosquitto, EMQX, HiveMQ, VerneMQ: 65535 bytes;
  AWS IoT Core: 128 bytes) accept more, so the limit is the gateway id's 64.  For a broker that
  holds to 23, set a ``client_id`` of at most 23 letters and digits.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from gateway.config.errors import ValueErrorAt

MAX_PREFIX_BYTES = 100
MAX_CLIENT_ID_BYTES = 64
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SCHEMES = ("mqtt", "mqtts")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` (RFC 6761) or a loopback address."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(url: str) -> str:
    """``url`` as an error may quote it: whatever comes before an '@' could be a password (a
    mistyped ``mqtts:/user:secret@host`` has no netloc for the check below to find it in)."""
    if "@" not in url:
        return repr(url)
    scheme, sep, rest = url.partition("://") if "://" in url else ("", "", url)
    return repr(f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}")


def check_url(url: str) -> str:
    """``url`` if it is a usable broker URL; raises ``ValueErrorAt`` (which the loader does not
    follow with the value) so a URL holding a password is never echoed."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueErrorAt(
            "holds credentials ('user:password@'): remove them; put the user name in 'username' "
            "and the password in a file named by 'password_file'",
            (),
        )
    if parts.scheme not in SCHEMES:
        raise ValueErrorAt(f"must start with mqtt:// or mqtts:// (got {_shown(url)})", ())
    if not parts.hostname:
        raise ValueErrorAt(f"has no host name (got {_shown(url)})", ())
    try:
        _ = parts.port
    except ValueError:
        raise ValueErrorAt(f"has an invalid port (got {_shown(url)})", ()) from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueErrorAt(f"must be just scheme://host[:port] (got {_shown(url)})", ())
    return url


def check_plaintext(url: str, insecure_plaintext: bool) -> None:
    """The TLS policy of the module docstring, as a ``ValueErrorAt`` on ``url`` or
    ``insecure_plaintext``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "mqtts":
        if insecure_plaintext:
            raise ValueErrorAt(
                "is true but the url is mqtts:// (encrypted): remove the setting", ("insecure_plaintext",)
            )
        return
    if not is_loopback(host) and not insecure_plaintext:
        raise ValueErrorAt(
            f"mqtt:// sends patients' records unencrypted to {host!r}: use mqtts:// — plain mqtt:// is "
            "allowed only to localhost, 127.0.0.1 or ::1, or with 'insecure_plaintext: true' "
            "(then every connect logs an error)",
            ("url",),
        )


def check_topic_prefix(prefix: str) -> str:
    levels = prefix.split("/")
    if any(level == "" for level in levels):
        raise ValueError(
            f"has an empty level ({prefix!r}): levels are separated by single '/', none at the start or end"
        )
    for bad, name in (("+", "'+'"), ("#", "'#'"), ("\x00", "NUL")):
        if bad in prefix:
            raise ValueError(f"contains {name} ({prefix!r}): wildcards and NUL are not allowed in a topic name")
    if prefix.startswith("$"):
        raise ValueError(f"starts with '$' ({prefix!r}): such topics are reserved for the broker ($SYS)")
    if len(prefix.encode()) > MAX_PREFIX_BYTES:
        raise ValueError(f"is longer than {MAX_PREFIX_BYTES} bytes")
    return prefix


def check_client_id(client_id: str) -> str:
    if not CLIENT_ID_PATTERN.match(client_id):
        raise ValueError(
            f"may only hold letters, digits, '-', '_' and '.' and start with a letter or digit ({client_id!r})"
        )
    if len(client_id.encode()) > MAX_CLIENT_ID_BYTES:
        raise ValueError(
            f"is {len(client_id.encode())} bytes; at most {MAX_CLIENT_ID_BYTES} "
            "(a broker that allows only the MQTT minimum needs at most 23 letters and digits)"
        )
    return client_id
