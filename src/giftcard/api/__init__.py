"""The HTTP door: FastAPI routers that parse, authenticate, call one use case, render."""
