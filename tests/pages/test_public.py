"""Public pages through the app: benchmarks, leaderboard table, sort links, chart, models;
caching headers, the content security policy, and escaping of everything users wrote."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import (
    make_benchmark,
    make_leaderboard,
    make_model,
    make_submission,
    make_user,
    realistic_entry,
)
from zerospeech_api.app import create_app
from zerospeech_api.db.tables import Benchmark, Model, Submission, SubmissionStatus
from zerospeech_api.leaderboards import service
from zerospeech_api.leaderboards.definition import Column, update_leaderboard
from zerospeech_api.pages.render import CSP

HISTORIC = Path(__file__).parents[1] / "leaderboards" / "data" / "slm21-historic.json"
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


@pytest.fixture
def site(make_settings, db, settings) -> Iterator[TestClient]:
    """An app that re-checks leaderboards on every read, a public benchmark with the historic
    leaderboard, a private one, and a published model."""
    settings = make_settings(database_url=db.url, leaderboard_recheck_seconds=0)
    bench = make_benchmark(db, "sLM21", label="Spoken LM 2021", quota="3/1d")
    make_benchmark(db, "hidden", label="Hidden one", private=True)
    make_leaderboard(db, "slm21", bench)
    with db.transaction() as session:
        entries = service.parse_document(HISTORIC.read_bytes())
        service.import_entries(session=session, label="slm21", entries=entries)
    with TestClient(create_app(settings)) as client:
        yield client


def publish(db, settings, *, entry: dict, model_fields: dict | None = None) -> tuple[str, str]:
    """A completed submission of a new user's model, published on the leaderboards."""
    user = make_user(db, settings)
    model_id = make_model(db, user)
    sid = make_submission(
        db, settings, user, benchmark_id="sLM21", model_id=model_id,
        status=SubmissionStatus.COMPLETED,
    )  # fmt: skip
    with db.transaction() as session:
        if model_fields:
            for key, value in model_fields.items():
                setattr(session.get(Model, model_id), key, value)
        stamped = {**entry, "model_id": model_id, "submission_id": sid}
        service.publish(
            session=session,
            submission=session.get(Submission, sid),
            entries={"scores/leaderboard.json": stamped},
        )
    return model_id, sid


def rows(html: str) -> list[str]:
    """The rank cells of the leaderboard table, in page order."""
    return re.findall(r'<td class="num rank">(\d+)</td>', html)


def test_index_and_benchmark_pages_show_public_benchmarks_only(site: TestClient) -> None:
    index = site.get("/page/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "Spoken LM 2021" in index.text and 'href="/page/leaderboards/slm21"' in index.text
    assert "Hidden one" not in index.text and "test-challenge" not in index.text
    assert "open" in index.text
    page = site.get("/page/benchmarks/sLM21")
    assert page.status_code == 200
    assert "3/1d" in page.text and 'href="https://example.org"' in page.text
    hidden = site.get("/page/benchmarks/hidden")
    assert hidden.status_code == 404 and hidden.headers["content-type"].startswith("text/html")
    assert site.get("/page/benchmarks/nope").status_code == 404


def test_leaderboard_page_has_the_ranked_table_the_chart_and_the_downloads(site) -> None:
    response = site.get("/page/leaderboards/slm21")
    assert response.status_code == 200
    html = response.text
    document = site.get("/leaderboards/slm21/json").json()
    assert rows(html) == [str(e["index"]) for e in document["data"]]
    assert '<th scope="col"' in html and '<th scope="row">' in html  # real table headers
    assert html.count('<tr id="rank-') == len(document["data"])
    assert 'href="/leaderboards/slm21/json"' in html and 'href="/leaderboards/slm21/csv"' in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    drawable = [
        e
        for e in document["data"]
        if e.get("submission_date") and service.sort_value(e, "scores.lexical.all.test") is not None
    ]
    assert svg.count("<circle") == len(drawable) > 5
    assert len(drawable) < len(document["data"])  # one historic entry has no score: not drawn
    assert "has no date or no score" in html
    assert 'class="best-line"' in svg
    # The ranking score is the first score column; the default columns are the numeric scores.
    headers = re.findall(r'<th scope="col"[^>]*><a href="\?sort=([^"]+)"', html)
    assert headers[:5] == ["-rank", "model", "author", "-date", "-scores.lexical.all.test"]
    assert "scores.syntactic.test" in html


def test_sort_links_reorder_the_table(site) -> None:
    document = site.get("/leaderboards/slm21/json").json()["data"]
    by_date = site.get("/page/leaderboards/slm21", params={"sort": "-date"})
    assert by_date.status_code == 200
    dated = sorted(
        (e for e in document if e.get("submission_date")),
        key=lambda e: (e["submission_date"][:10], -e["index"]),
        reverse=True,
    )
    assert [int(r) for r in rows(by_date.text)][: len(dated)] == [e["index"] for e in dated]
    # The active header links to the reverse order and says which way it sorts.
    assert 'aria-sort="descending"><a href="?sort=date">' in by_date.text
    worst_first = site.get("/page/leaderboards/slm21", params={"sort": "-rank"})
    assert rows(worst_first.text) == list(reversed(rows(site.get("/page/leaderboards/slm21").text)))
    bad = site.get("/page/leaderboards/slm21", params={"sort": "<script>"})
    assert bad.status_code == 400 and "unknown sort column" in bad.text
    assert "<script>" not in bad.text


def test_column_definitions_choose_what_the_table_shows(site, db) -> None:
    with db.transaction() as session:
        update_leaderboard(
            session=session,
            label="slm21",
            columns=[Column("scores.lexical.all.test", "Lexical (test)", ".1f"),
                     Column("extras.epochs", "Epochs", ",d")],
        )  # fmt: skip
    html = site.get("/page/leaderboards/slm21").text
    headers = re.findall(r'<th scope="col"[^>]*><a href="\?sort=[^"]+">([^<▲▼]+)', html)
    assert [h.strip() for h in headers] == [
        "#",
        "Model",
        "Authors",
        "Date",
        "Lexical (test)",
        "Epochs",
    ]
    first = site.get("/leaderboards/slm21/json").json()["data"][0]
    assert f">{first['scores']['lexical']['all']['test']:.1f}<" in html
    assert "syntactic" not in html.split("<tbody>")[0]


def test_public_pages_are_cacheable_with_etags_and_a_strict_policy(site) -> None:
    for path in ("/page/", "/page/benchmarks/sLM21", "/page/leaderboards/slm21"):
        response = site.get(path)
        assert response.headers["cache-control"] == "public, max-age=60", path
        assert response.headers["content-security-policy"] == CSP
        assert "set-cookie" not in response.headers  # the same bytes for everyone
        assert "<script" not in response.text
        loaded = re.findall(r'<(?:link|img|script)[^>]+(?:href|src)="([^"]+)"', response.text)
        assert loaded and all(url.startswith("/page/static/") for url in loaded), loaded
        again = site.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.headers["etag"] == response.headers["etag"]
    css = site.get(re.search(r'href="(/page/static/style.css[^"]*)"', response.text).group(1))
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "etag" in css.headers
    assert site.get("/page/static/../app.py").status_code == 404
    assert site.get("/page/static/other.css").status_code == 404
    assert site.get("/page/leaderboards/nope").status_code == 404


def test_a_new_entry_changes_the_page_and_its_etag(site, db, settings) -> None:
    before = site.get("/page/leaderboards/slm21")
    publish(db, settings, entry=realistic_entry(99, score=99.9))
    after = site.get("/page/leaderboards/slm21", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert len(rows(after.text)) == len(rows(before.text)) + 1


def test_model_page_only_once_published(site, db, settings) -> None:
    user = make_user(db, settings)
    unpublished = make_model(db, user)
    assert site.get(f"/page/models/{unpublished}").status_code == 404
    model_id, sid = publish(
        db, settings, entry=realistic_entry(7, score=99.5),
        model_fields={"description": "A fine model", "paper_url": "https://arxiv.org/abs/1",
                      "code_url": "https://example.org/code"},
    )  # fmt: skip
    page = site.get(f"/page/models/{model_id}")
    assert page.status_code == 200 and "A fine model" in page.text
    assert 'href="https://arxiv.org/abs/1"' in page.text
    assert 'href="/page/leaderboards/slm21#rank-1"' in page.text and sid in page.text
    board = site.get("/page/leaderboards/slm21").text
    assert f'href="/page/models/{model_id}"' in board  # live entries link to their model
    assert 'href="/page/models/model-002"' not in board  # imported ones have none here


def test_hostile_text_is_escaped_on_every_public_page(site, db, settings) -> None:
    entry = realistic_entry(3, score=42.0)
    entry["description"] = HOSTILE
    entry["submission_date"] = HOSTILE
    entry["publication"] = {**entry["publication"], "author_short": HOSTILE,
                            "paper_url": "javascript:alert(3)", "code": HOSTILE}  # fmt: skip
    entry["scores"]["syntactic"]["test"] = HOSTILE
    model_id, _ = publish(
        db, settings, entry=entry,
        model_fields={"description": HOSTILE, "authors": HOSTILE, "institution": HOSTILE,
                      "team": HOSTILE, "train_set": HOSTILE, "paper_url": HOSTILE},
    )  # fmt: skip
    with db.transaction() as session:
        update_leaderboard(
            session=session, label="slm21",
            columns=[Column("scores.syntactic.test", HOSTILE.replace("=", "")[:60])],
        )  # fmt: skip
    with db.transaction() as session:
        session.get(Benchmark, "sLM21").label = HOSTILE
        session.get(Benchmark, "sLM21").url = "javascript:alert(4)"
    pages = [
        site.get(path).text
        for path in (
            "/page/", "/page/benchmarks/sLM21", f"/page/models/{model_id}",
            "/page/leaderboards/slm21", "/page/leaderboards/slm21?sort=-scores.syntactic.test",
        )
    ]  # fmt: skip
    for html in pages:
        assert "<script" not in html and "<img" not in html  # neither tag nor attribute breaks out
        assert 'href="javascript:' not in html  # unsafe URLs are shown as text, never linked
        assert "&lt;script&gt;" in html  # the text is there, escaped
