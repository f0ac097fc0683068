"""Fault tests: the service under SIGKILL and a database restart, checked against a model."""
