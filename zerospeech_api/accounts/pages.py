"""HTML pages under /page/ (jinja2, no JavaScript)."""

from fastapi import APIRouter

router = APIRouter(prefix="/page", include_in_schema=False)
