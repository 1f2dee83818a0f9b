"""Plumbing shared by every daemon: configuration, structured logging, backoff.

It lives here once so the daemons never grow their own copies.
"""
