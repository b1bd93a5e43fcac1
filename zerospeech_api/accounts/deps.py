"""Request dependencies of accounts: the user named in the path, for themselves or an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy import select

from zerospeech_api.db.tables import User
from zerospeech_api.deps import CurrentUser, SessionDep, reads_in_one_hop
from zerospeech_api.errors import Forbidden, NotFound


def require_self_or_admin(username: str, user: User) -> None:
    """403 unless the caller is `username` or an admin (the contract's profile rule)."""
    if user.username != username and not user.admin:
        raise Forbidden("not allowed: this resource belongs to another user")


@reads_in_one_hop
def get_path_user(username: str, user: CurrentUser, session: SessionDep) -> User:
    """The user named in the path, when the caller is that user or an admin (403 otherwise)."""
    require_self_or_admin(username, user)
    if user.username == username:
        return user
    target = session.scalar(select(User).where(User.username == username))
    if target is None:
        raise NotFound(f"no user {username}")
    return target


PathUser = Annotated[User, Depends(get_path_user)]
