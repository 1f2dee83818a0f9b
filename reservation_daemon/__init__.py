"""Reservation daemon: events, seat maps and holds; the source of truth for availability."""
