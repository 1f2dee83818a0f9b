"""Billing daemon: users, orders, payments, tickets, refunds and check-in."""
