"""Shared test helpers: dataset writers, fault-injection trainables, scripts run in subprocesses."""
