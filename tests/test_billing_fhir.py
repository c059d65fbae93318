"""The ChargeItem rendering validates against the FHIR R4B models for every status and code."""

from __future__ import annotations

from datetime import date

import pytest
from fhir.resources.R4B.chargeitem import ChargeItem

from gateway.billing.fhir import SERVICE_SYSTEM, charge_item
from gateway.records import BillingRecord
from tests.billing_helpers import book, close_all, feed_days


def all_records() -> list[BillingRecord]:
    b = book()
    return feed_days(b, date(2026, 3, 1), list(range(17))) + close_all(b)


@pytest.mark.parametrize("record", all_records(), ids=lambda r: r.key)
def test_charge_item_is_valid_r4b(record: BillingRecord) -> None:
    item = ChargeItem.model_validate(charge_item(record))
    assert item.status == {"accruing": "planned", "not_billable": "not-billable"}.get(record.status.value, "billable")
    assert item.code.coding[0].system == "http://www.ama-assn.org/go/cpt"
    assert item.code.coding[0].code == record.code
    assert item.identifier[0].system == SERVICE_SYSTEM and item.identifier[0].value == record.service_key
    assert item.meta.versionId == str(record.version)
    assert item.subject.identifier.value == "p1"
    assert str(item.occurrencePeriod.start) == record.period_start
    assert len(item.supportingInformation or []) == len(record.evidence)


def test_statuses_map_to_distinct_lifecycle_values() -> None:
    statuses = {charge_item(r)["status"] for r in all_records()}
    assert statuses == {"planned", "billable", "not-billable"}
