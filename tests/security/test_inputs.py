"""The shared input rules (security.inputs), and that every route applies them: hostile text in
bodies, paths and queries is a clear 400 on SQLite and PostgreSQL, never a 500."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import bearer, make_user
from zerospeech_api.db.engine import Database
from zerospeech_api.db.keys import name_key
from zerospeech_api.security.inputs import (
    CONTROL_CHARACTER,
    DATE_OUT_OF_RANGE,
    bounded_datetime,
    first_unsafe,
    multi_line,
    one_line,
)
from zerospeech_api.settings import Settings

# One of each kind the API refuses.
UNSAFE = {
    "nul": "\x00",
    "escape": "\x1b[2J",
    "newline": "\n",
    "carriage return": "\r",
    "tab": "\t",
    "delete": "\x7f",
    "c1 control": "\x85",
    "line separator": "\u2028",
    "bidi override": "\u202e",
    "bidi isolate": "\u2066",
    "lone surrogate": "\ud800",
}
MULTILINE_OK = {"newline", "carriage return", "tab"}
# Text people really write: accents, other scripts, emoji sequences (ZWJ), marks, NBSP.
ORDINARY = [
    "Élodie Ñúñez",
    "中文 名字",
    "עברית ‏mark",
    "فارسی\u200cنیم",
    "👩‍🔬 lab",
    "O'Brien & co.",
    "a\u00a0b",
]


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_one_line_text_refuses_every_kind_of_control_character(kind: str) -> None:
    with pytest.raises(ValueError, match=CONTROL_CHARACTER):
        one_line(f"Ada{UNSAFE[kind]}Lovelace")
    if kind in MULTILINE_OK:
        assert multi_line(f"Ada{UNSAFE[kind]}Lovelace") == f"Ada{UNSAFE[kind]}Lovelace"
    else:
        with pytest.raises(ValueError, match=CONTROL_CHARACTER):
            multi_line(f"Ada{UNSAFE[kind]}Lovelace")


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_in_any_script_passes(text: str) -> None:
    assert one_line(text) == multi_line(text) == text
    assert first_unsafe(text) is None


def test_the_refusal_names_the_character_without_echoing_it() -> None:
    with pytest.raises(ValueError) as refused:
        one_line("x\x1b[31m")
    assert "U+001B" in str(refused.value) and "\x1b" not in str(refused.value)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-14))),
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))),
        dt.datetime(2200, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(1899, 12, 31),
    ],
)
def test_datetimes_out_of_range_are_refused_without_overflowing(value: dt.datetime) -> None:
    with pytest.raises(ValueError, match="must be between"):
        bounded_datetime(value)


def test_datetimes_in_range_become_aware_utc() -> None:
    assert bounded_datetime(dt.datetime(2024, 5, 1, 12)) == dt.datetime(
        2024, 5, 1, 12, tzinfo=dt.UTC
    )
    paris = dt.datetime(2024, 5, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert bounded_datetime(paris).tzinfo == dt.UTC and bounded_datetime(paris).hour == 12


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ÉLODIE@example.org", "élodie@example.org"),
        ("E\u0301lodie@example.org", "élodie@example.org"),  # decomposed accent
        ("STRASSE@example.org", "straße@example.org"),
        ("ＡＤＡ@example.org", "ada@example.org"),  # fullwidth letters
        ("Ada_L", "ada_l"),
    ],
)
def test_name_keys_are_equal_for_names_differing_only_in_case(one: str, other: str) -> None:
    assert name_key(one) == name_key(other)


# --- every route ----------------------------------------------------------------------------


def _post_json(client: TestClient, path: str, body: dict, headers: dict | None = None):
    # json.dumps escapes lone surrogates as \ud800, as a hostile client would send them.
    return client.post(
        path,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


SIGNUP = {
    "username": "ada_l",
    "email": "ada@example.org",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "affiliation": "Analytical Engines",
    "password": "a long enough password",
}


@pytest.mark.parametrize("kind", ["nul", "escape", "newline", "bidi override", "lone surrogate"])
def test_hostile_text_in_bodies_is_400_on_every_route(
    client: TestClient, db: Database, settings: Settings, kind: str
) -> None:
    bad = f"x{UNSAFE[kind]}y"
    bob = make_user(db, settings, username="bob")
    as_bob = bearer(db, settings, bob)
    responses = {
        f"signup {field}": _post_json(client, "/auth/signup", {**SIGNUP, field: bad})
        for field in ("first_name", "last_name", "affiliation")
    }
    responses["profile"] = client.patch(
        "/users/bob/profile",
        content=json.dumps({"affiliation": bad}).encode(),
        headers={"Content-Type": "application/json", **as_bob},
    )
    if kind != "lone surrogate":  # a form body cannot even carry one (UTF-8, decoded safely)
        responses["login"] = client.post("/auth/login", data={"username": bad, "password": "pw"})
    responses["verify"] = _post_json(client, "/auth/verify", {"token": bad})
    responses["reset"] = _post_json(
        client, "/auth/password/update", {"token": bad, "password": "long enough"}
    )
    responses["model label"] = _post_json(
        client, "/users/bob/models/create", {"description": "d", "author_label": bad}, as_bob
    )
    responses["model gpu budget"] = _post_json(
        client, "/users/bob/models/create", {"description": "d", "gpu_budget": bad}, as_bob
    )
    responses["model url"] = _post_json(
        client,
        "/users/bob/models/create",
        {"description": "d", "paper_url": f"https://{bad}"},
        as_bob,
    )
    responses["submission model id"] = _post_json(
        client,
        "/users/bob/submissions/create",
        {"model_id": bad, "benchmark_id": "b", "filename": "s.zip", "hash": "0" * 32},
        as_bob,
    )
    for what, response in responses.items():
        assert response.status_code == 400, (what, response.status_code, response.text)
        assert isinstance(response.json()["detail"], str), what
    if kind != "lone surrogate":  # pydantic may refuse those first, as unparsable text
        assert CONTROL_CHARACTER in responses["signup first_name"].json()["detail"]


@pytest.mark.parametrize("kind", ["nul", "escape", "lone surrogate", "bidi override"])
def test_multi_line_model_texts_refuse_controls_other_than_newlines(
    client: TestClient, db: Database, settings: Settings, kind: str
) -> None:
    as_bob = bearer(db, settings, make_user(db, settings, username="bob"))
    for field in ("description", "train_set", "authors"):
        body = {"description": "d", field: f"line 1\nline 2{UNSAFE[kind]}"}
        response = _post_json(client, "/users/bob/models/create", body, as_bob)
        assert response.status_code == 400, (field, response.text)
        assert response.json()["detail"].startswith(field)
    ok = _post_json(
        client, "/users/bob/models/create", {"description": "line 1\n\tline 2\r\n"}, as_bob
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "created_at",
    [
        "9999-12-31T23:00:00-14:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59",
        "1000-01-01T00:00:00Z",
    ],
)
def test_model_dates_out_of_range_are_400(
    client: TestClient, db: Database, settings: Settings, created_at: str
) -> None:
    as_bob = bearer(db, settings, make_user(db, settings, username="bob"))
    body = {"description": "d", "created_at": created_at}
    response = _post_json(client, "/users/bob/models/create", body, as_bob)
    assert response.status_code == 400, response.text
    assert DATE_OUT_OF_RANGE in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/users/a%00b/profile",
        "/models/a%00b/info",
        "/models/a%1Bb/submissions/list",
        "/benchmarks/a%0Ab/info",
        "/submissions/a%E2%80%AEb/content/status",
        "/leaderboards/a%00b/json",
        "/users/bob/models/create?author_name=Lovelace%00",
        "/page/verify?token=a%00b",
        "/page/reset?token=a%0D%0Ab",
    ],
)
def test_control_characters_in_paths_and_queries_are_400(
    client: TestClient, db: Database, settings: Settings, url: str
) -> None:
    admin = make_user(db, settings, username="root", admin=True)
    make_user(db, settings, username="bob")
    method = client.post if "models/create" in url else client.get
    response = method(url, headers=bearer(db, settings, admin))
    assert response.status_code == 400, response.text
    assert CONTROL_CHARACTER in response.json()["detail"]


def test_ordinary_unicode_in_paths_and_queries_still_works(
    client: TestClient, db: Database, settings: Settings
) -> None:
    as_bob = bearer(db, settings, make_user(db, settings, username="bob"))
    created = client.post(
        "/users/bob/models/create?author_name=N%C3%BA%C3%B1ez%20%C4%85",
        json={"description": "d"},
        headers=as_bob,
    )
    assert created.status_code == 200, created.text
    assert client.get("/models/%C3%A9l%C3%A9phant/info", headers=as_bob).status_code == 404
