"""The kiosk desk unit."""
