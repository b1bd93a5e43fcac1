"""HTTP routes of leaderboards (thin: parse, call one service function, return a schema)."""

from fastapi import APIRouter

router = APIRouter(tags=["leaderboards"])
