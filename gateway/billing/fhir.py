"""FHIR R4 ``ChargeItem`` rendering of a billable-service record (plain JSON, no FHIR library at runtime).

Mapping (see ``../shared/reference/rpm-billing.md``): ``status`` from the record's lifecycle,
``code`` in the CPT system, ``subject`` by the patient pseudonym, ``occurrencePeriod`` the service
period (dates: a FHIR period end includes its whole day), ``quantity`` 1, ``enteredDate`` the record
time, and one ``supportingInformation`` reference per qualifying day, identified by patient and date
so upstream can match them to the day's Observations.
"""

from __future__ import annotations

from typing import Any

from gateway.records import BillingRecord, BillingStatus

SERVICE_SYSTEM = "urn:iomt-gateway:rpm-service"
PATIENT_SYSTEM = "urn:iomt-gateway:patient"
DAY_SYSTEM = "urn:iomt-gateway:day-of-data"

# 'eligible' is settled like 'billable' (it can no longer change); 'accruing' is only planned.
_STATUS = {
    BillingStatus.ACCRUING: "planned",
    BillingStatus.ELIGIBLE: "billable",
    BillingStatus.BILLABLE: "billable",
    BillingStatus.NOT_BILLABLE: "not-billable",
}


def charge_item(record: BillingRecord) -> dict[str, Any]:
    notes = [f"{record.qualifying_days} day(s) of data, status {record.status.value}, days cut in {record.timezone}"]
    if record.reason:
        notes.append(record.reason)
    return {
        "resourceType": "ChargeItem",
        "meta": {"versionId": str(record.version)},
        "identifier": [{"system": SERVICE_SYSTEM, "value": record.service_key}],
        "status": _STATUS[record.status],
        "code": {"coding": [{"system": record.code_system, "code": record.code}]},
        "subject": {"identifier": {"system": PATIENT_SYSTEM, "value": record.patient}},
        "occurrencePeriod": {"start": record.period_start, "end": record.period_end},
        "quantity": {"value": 1},
        "enteredDate": record.time.isoformat(),
        "note": [{"text": n} for n in notes],
        "supportingInformation": [
            {
                "identifier": {"system": DAY_SYSTEM, "value": f"{record.patient}/{ev.date}"},
                "display": f"{ev.date}: {ev.readings} reading(s) from {', '.join(ev.devices)}",
            }
            for ev in record.evidence
        ],
    }
