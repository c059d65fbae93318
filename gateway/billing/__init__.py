"""Remote Patient Monitoring billing: days of data → billable-service records (see ``book`` for the rules)."""
