"""NiceGUI pages (thin callers of the services)."""
