"""Model routes: the zrc client's create call, lists, and who may read what."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.helpers.factories import MODEL_ID_SHAPE, bearer, make_user, model_info, publish_model
from zerospeech_api.db.engine import Database
from zerospeech_api.models.schemas import BAD_URL
from zerospeech_api.settings import Settings


def test_create_as_the_client_sends_it(
    client: TestClient, db: Database, settings: Settings
) -> None:
    user = make_user(db, settings)
    body = model_info(unknown_key="ignored", another={"nested": 1}, gpu_budget=60)
    # The client writes author_name into the URL as is: spaces and non-ASCII letters.
    response = client.post(
        f"/users/{user.username}/models/create?author_name=Müller Lüdenscheidt/../x",
        json=body,
        headers=bearer(db, settings, user),
    )
    assert response.status_code == 200, response.text
    model_id = response.json()["model_id"]
    assert MODEL_ID_SHAPE.fullmatch(model_id)
    # author_name never becomes a path: nothing named after it exists in the data folder.
    names = {p.name for p in settings.data_dir.rglob("*")}
    assert not any("Müller" in n or "x" == n for n in names)
    listed = client.get(f"/users/{user.username}/models/list", headers=bearer(db, settings, user))
    assert listed.status_code == 200
    (model,) = listed.json()["models"]
    assert model["model_id"] == model_id and model["gpu_budget"] == "60"
    assert model["owner"] == user.username and model["paper_url"] == "https://example.org/paper"


def test_create_rules(client: TestClient, db: Database, settings: Settings) -> None:
    user, other = make_user(db, settings), make_user(db, settings)
    headers = bearer(db, settings, user)
    url = f"/users/{user.username}/models/create"
    assert client.post(url, json=model_info()).status_code == 401
    other_url = f"/users/{other.username}/models/create"
    forbidden = client.post(other_url, json=model_info(), headers=headers)
    assert forbidden.status_code == 403 and "another user" in forbidden.json()["detail"]
    bad_url = client.post(url, json=model_info(code_url="javascript:alert(1)"), headers=headers)
    assert bad_url.status_code == 400 and BAD_URL in bad_url.json()["detail"]
    missing = client.post(url, json={"gpu_budget": "1"}, headers=headers)
    assert missing.status_code == 400 and "description" in missing.json()["detail"]
    not_json = client.post(
        url, content=b"{", headers={**headers, "content-type": "application/json"}
    )
    assert not_json.status_code == 400
    blank_url = client.post(url, json=model_info(paper_url=""), headers=headers)
    assert blank_url.status_code == 200


def test_admin_may_create_and_list_for_a_user(
    client: TestClient, db: Database, settings: Settings
) -> None:
    user, admin = make_user(db, settings), make_user(db, settings, admin=True)
    headers = bearer(db, settings, admin)
    created = client.post(
        f"/users/{user.username}/models/create", json=model_info(), headers=headers
    )
    assert created.status_code == 200
    listed = client.get(f"/users/{user.username}/models/list", headers=headers).json()
    assert [m["owner"] for m in listed["models"]] == [user.username]
    assert client.get("/users/ghost/models/list", headers=headers).status_code == 404


def test_info_and_submissions_visibility(
    client: TestClient, db: Database, settings: Settings
) -> None:
    owner, other = make_user(db, settings), make_user(db, settings)
    owner_headers = bearer(db, settings, owner)
    model_id = client.post(
        f"/users/{owner.username}/models/create", json=model_info(), headers=owner_headers
    ).json()["model_id"]
    assert client.get(f"/models/{model_id}/info", headers=owner_headers).status_code == 200
    assert client.get(f"/models/{model_id}/info").status_code == 401
    other_headers = bearer(db, settings, other)
    assert client.get(f"/models/{model_id}/info", headers=other_headers).status_code == 403
    assert client.get(f"/models/{model_id}/submissions/list").status_code == 401
    assert client.get("/models/nope-nope-0000/info").status_code == 404

    published = publish_model(db, owner, model_id, "public", private=False)
    public = client.get(f"/models/{model_id}/info")
    assert public.status_code == 200 and public.json()["model_id"] == model_id
    subs = client.get(f"/models/{model_id}/submissions/list").json()["submissions"]
    assert [s["submission_id"] for s in subs] == [published]
    assert subs[0]["filename"] is None  # the public view has no archive details
    full = client.get(f"/models/{model_id}/submissions/list", headers=owner_headers).json()
    assert full["submissions"][0]["filename"] == "a.zip"
