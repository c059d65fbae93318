"""Security rules of the config: TLS by default, no secrets in the URL, safe topic prefix, client id and ids.

Each mistake must come out as ``<file>:<line>: <field>: <what is wrong> ...`` with exit status 2
from ``check-config`` and no traceback.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from gateway.config.commands import check_config_command
from gateway.config.errors import ConfigError
from gateway.config.loader import parse_config_text
from gateway.config.upstream import is_loopback

TEMPLATE = """\
gateway:
  id: hub-01
upstream:
  url: {url}
{extra}patients:
  - id: p1
    devices:
      - id: {device}
        driver: replay
        vitals: a.jsonl
"""


def _config(url: str = "mqtts://broker.example.org", extra: str = "", device: str = "d1") -> str:
    return TEMPLATE.format(url=url, extra="".join(f"  {line}\n" for line in extra.splitlines()), device=device)


def _problems(text: str, tmp_path: Path) -> tuple[str, str]:
    """(rendered error, check-config's stderr) for a config that must be refused with exit 2."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=path)
    err = io.StringIO()
    assert check_config_command(path, out=io.StringIO(), err=err) == 2
    assert "Traceback" not in err.getvalue()
    return info.value.render(), err.getvalue()


def _only(text: str, tmp_path: Path) -> str:
    rendered, printed = _problems(text, tmp_path)
    lines = rendered.splitlines()
    assert len(lines) == 2, rendered
    assert printed.strip().splitlines()[1:] == lines[1:]  # check-config prints the same problem line
    return lines[1].split("config.yaml", 1)[1]


# --------------------------------------------------------------------------------------------
# TLS by default


@pytest.mark.parametrize("url", ["mqtt://broker.example.org", "mqtt://10.0.0.5:1883", "mqtt://0.0.0.0:1883"])
def test_plain_mqtt_to_another_host_is_refused(url: str, tmp_path: Path) -> None:
    line = _only(_config(url), tmp_path)
    assert line.startswith(":4: upstream.url: mqtt:// sends patients' records unencrypted"), line
    assert "use mqtts://" in line and "insecure_plaintext: true" in line


@pytest.mark.parametrize(
    "url", ["mqtt://127.0.0.1:1883", "mqtt://localhost", "mqtt://[::1]:1883", "mqtt://127.8.9.10", "mqtt://LOCALHOST"]
)
def test_plain_mqtt_to_loopback_is_allowed(url: str, tmp_path: Path) -> None:
    cfg = parse_config_text(_config(url), file=tmp_path / "c.yaml")
    assert not cfg.upstream.tls and not cfg.upstream.plaintext_remote


def test_insecure_plaintext_allows_it_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_config("mqtt://broker.example.org", "insecure_plaintext: true"))
    out = io.StringIO()
    assert check_config_command(path, out=out, err=io.StringIO()) == 0
    assert "NOT encrypted (insecure_plaintext" in out.getvalue()
    cfg = parse_config_text(path.read_text(), file=path)
    assert cfg.upstream.plaintext_remote


def test_insecure_plaintext_with_mqtts_is_a_mistake(tmp_path: Path) -> None:
    line = _only(_config("mqtts://broker.example.org", "insecure_plaintext: true"), tmp_path)
    assert line.startswith(":5: upstream.insecure_plaintext: is true but the url is mqtts://"), line


def test_loopback_rule() -> None:
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("localhost.example.org") and not is_loopback("10.0.0.1")


# --------------------------------------------------------------------------------------------
# No credentials in the URL, and never echoed


@pytest.mark.parametrize(
    "url",
    [
        "mqtts://hub:Tr0ub4dor&3@broker.example.org:8883",
        "mqtts://:Tr0ub4dor&3@broker.example.org",
        "mqtt://hub:Tr0ub4dor&3@127.0.0.1:99999",  # also a bad port: that error must not echo it either
        "http://hub:Tr0ub4dor&3@broker",  # also a bad scheme
    ],
)
def test_password_in_url_is_refused_without_echo(url: str, tmp_path: Path) -> None:
    rendered, printed = _problems(_config(url), tmp_path)
    assert "Tr0ub4dor" not in rendered and "Tr0ub4dor" not in printed
    assert re.search(r"config\.yaml:4: upstream\.url: holds credentials .*password_file", rendered), rendered


def test_user_name_in_url_is_refused_too(tmp_path: Path) -> None:
    line = _only(_config("mqtts://hub@broker.example.org"), tmp_path)
    assert line.startswith(":4: upstream.url: holds credentials")


def test_url_with_a_path_is_refused(tmp_path: Path) -> None:
    line = _only(_config("mqtts://broker.example.org/mqtt"), tmp_path)
    assert "must be just scheme://host[:port]" in line


# --------------------------------------------------------------------------------------------
# Topic prefix, client id, device ids


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("iomt/#", "contains '#'"),
        ("iomt/+/x", "contains '+'"),
        ("iomt//x", "empty level"),
        ("/iomt", "empty level"),
        ("iomt/", "empty level"),
        ("'io\\0mt'", "contains NUL"),
        ("$SYS/iomt", "reserved for the broker"),
        ("'" + "a" * 101 + "'", "longer than 100 bytes"),
    ],
)
def test_bad_topic_prefix_is_refused(prefix: str, words: str, tmp_path: Path) -> None:
    quoted = prefix if prefix.startswith("'") else f"'{prefix}'"
    quoted = quoted.replace("'io\\0mt'", '"io\\0mt"')
    line = _only(_config(extra=f"topic_prefix: {quoted}"), tmp_path)
    assert line.startswith(":5: upstream.topic_prefix: "), line
    assert words in line, line


@pytest.mark.parametrize("prefix", ["iomt", "site-7/iomt", "a/b/c", "clinic.east"])
def test_good_topic_prefixes(prefix: str, tmp_path: Path) -> None:
    cfg = parse_config_text(_config(extra=f"topic_prefix: {prefix}"), file=tmp_path / "c.yaml")
    assert cfg.upstream.topic_prefix == prefix


@pytest.mark.parametrize(
    ("client_id", "words"),
    [
        ("hub 01", "may only hold letters"),
        ("hub/01", "may only hold letters"),
        ("hub+", "may only hold letters"),
        ("-hub", "start with a letter or digit"),
        ("h" * 65, "is 65 bytes; at most 64"),
    ],
)
def test_bad_client_id_is_refused(client_id: str, words: str, tmp_path: Path) -> None:
    line = _only(_config(extra=f"client_id: '{client_id}'"), tmp_path)
    assert line.startswith(":5: upstream.client_id: "), line
    assert words in line


@pytest.mark.parametrize("device", ["'ox/1'", "'ox 1'", "'+'", "'#'", "'.hidden'", "'" + "d" * 65 + "'"])
def test_device_ids_follow_the_patient_id_pattern(device: str, tmp_path: Path) -> None:
    line = _only(_config(device=device), tmp_path)
    assert line.startswith(":8: patients[0].devices[0].id: may only hold letters, digits, '-', '_' and '.'"), line


def test_a_crl_file_needs_mqtts(tmp_path: Path) -> None:
    line = _only(_config("mqtt://127.0.0.1:1883", "crl_file: /etc/iomt-gateway/site-ca.crl"), tmp_path)
    assert "ca_file/cert_file/crl_file need an mqtts:// url" in line, line
