"""IoMT edge gateway: supervises device drivers, processes signals at the edge, and forwards
summarised events and billable-service records upstream through a durable outbox."""

__version__ = "0.2.0"
