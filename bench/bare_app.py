"""The baseline for GET /: a bare FastAPI app with one constant route (run by gunicorn)."""

from fastapi import FastAPI

app = FastAPI()

BODY = {"app": "zerospeech-api", "version": "0.0.0", "contact": "x@example.org", "docs": "/docs"}


@app.get("/")
def index() -> dict[str, str]:
    """Same shape as the real GET /, a plain `def` like it (runs in the threadpool)."""
    return BODY
