"""REST API (thin routes over the services)."""
