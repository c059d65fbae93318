"""``iomt-gateway billing simulate`` over CSV files, through ``gateway.billing.cli.main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fhir.resources.R4B.chargeitem import ChargeItem

from gateway.billing.cli import main
from gateway.records import BillingRecord

DATA = Path(__file__).parent / "data" / "billing"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_simulate_march_prints_the_record_stream(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(["simulate", str(DATA / "march.csv"), "--tz", "America/Chicago"], capsys)
    assert code == 1  # two rows rejected; the others still produce their records
    assert "line 26: timestamp '2026-03-10T00:01:00' has no UTC offset" in err
    assert "line 27: timestamp 'not-a-time' is not ISO 8601" in err
    records = [BillingRecord.model_validate(x) for x in lines]
    assert [(r.patient, r.code, r.status.value, r.version) for r in records] == [
        ("p1", "99453", "billable", 1),
        ("p1", "99445", "accruing", 1),
        ("p2", "99453", "billable", 1),
        ("p2", "99445", "accruing", 1),
        ("p1", "99445", "not_billable", 2),
        ("p1", "99454", "eligible", 1),
        ("p1", "99454", "billable", 2),
        ("p2", "99445", "billable", 2),
    ]
    p1, p2 = records[6], records[7]
    assert (p1.qualifying_days, p1.devices, p1.period_end) == (17, ["cuff1", "ox1"], "2026-03-30")
    # 23:59 and 00:01 local are two days: 3, 5, 7, 9 and 10 March
    assert p2.dates == ["2026-03-03", "2026-03-05", "2026-03-07", "2026-03-09", "2026-03-10"]
    assert p2.key == "rpm:p2:99445:2026-03-03:v2"


def test_simulate_is_deterministic_and_latest_keeps_final_versions(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", str(DATA / "march.csv"), "--tz", "America/Chicago"]
    _, first, _ = run(argv, capsys)
    _, second, _ = run(argv, capsys)
    assert first == second
    _, latest, _ = run([*argv, "--latest"], capsys)
    assert sorted((x["code"], x["status"], x["patient"]) for x in latest) == [
        ("99445", "billable", "p2"),
        ("99445", "not_billable", "p1"),
        ("99453", "billable", "p1"),
        ("99453", "billable", "p2"),
        ("99454", "billable", "p1"),
    ]


def test_simulate_until_leaves_open_periods_open(capsys: pytest.CaptureFixture[str]) -> None:
    _, lines, _ = run(
        ["simulate", str(DATA / "march.csv"), "--tz", "America/Chicago", "--until", "2026-03-20T00:00:00-05:00"],
        capsys,
    )
    assert [(x["code"], x["status"]) for x in lines if x["patient"] == "p1"][-1] == ("99454", "eligible")
    assert not any(x["status"] == "billable" and x["code"] != "99453" for x in lines)


def test_simulate_fhir_output_validates(capsys: pytest.CaptureFixture[str]) -> None:
    _, lines, _ = run(["simulate", str(DATA / "march.csv"), "--tz", "America/Chicago", "--fhir"], capsys)
    assert len(lines) == 8
    for item in lines:
        ChargeItem.model_validate(item)


def test_simulate_other_zone_changes_the_days(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("p9,d,2026-03-02T23:30:00-06:00\np9,d,2026-03-03T00:30:00-06:00\n")
    _, chicago, _ = run(["simulate", str(csv), "--tz", "America/Chicago"], capsys)
    _, berlin, _ = run(["simulate", str(csv), "--tz", "Europe/Berlin"], capsys)
    assert [x["code"] for x in chicago] == ["99453", "99445", "99445"]  # 2 March and 3 March
    assert berlin == []  # both on 3 March in Berlin: one day of data bills nothing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p1,d\n", "expected 3 columns"),
        ("p 1,d,2026-03-01T00:00:00Z\n", "patient 'p 1' is not an id"),
        ("p1,d,yesterday\n", "timestamp 'yesterday' is not ISO 8601"),
    ],
)
def test_bad_rows_are_reported_with_line_numbers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("patient,device,timestamp\n" + text)
    code, lines, err = run(["simulate", str(csv)], capsys)
    assert code == 1 and lines == []
    assert f"line 2: {message}" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", str(tmp_path / "missing.csv")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["simulate", str(DATA / "march.csv"), "--tz", "Mars/Olympus"])
    assert e.value.code == 2
    assert "unknown time zone" in capsys.readouterr().err


def test_the_gateway_cli_dispatches_billing_with_its_options() -> None:
    root = Path(__file__).resolve().parent.parent
    argv = ["billing", "simulate", str(DATA / "march.csv"), "--tz", "UTC", "--latest"]
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *argv],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # the two bad rows of the fixture
    assert {json.loads(x)["key"] for x in done.stdout.splitlines()} >= {"rpm:p1:99454:2026-03-01:v2"}
    status = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "billing", "-c", str(root / "missing.yaml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 2 and "missing.yaml" in status.stderr
