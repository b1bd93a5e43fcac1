"""HTTP routes of accounts (thin: parse, call one service function, return a schema)."""

from fastapi import APIRouter

router = APIRouter(tags=["accounts"])
