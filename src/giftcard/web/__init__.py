"""The web door: server-rendered pages."""
