"""Impersonation headers: what is authorized, and whom the request then acts as."""

from __future__ import annotations

import pytest

from services.apiserver.auth import impersonation, types
from services.machinery import errors

ALICE = types.UserInfo(name="alice", groups=("devs", "system:authenticated"))


class Recorder:
    """Authorizes everything except ``deny``, and records what it was asked."""

    def __init__(self, *deny: tuple[str, str]) -> None:
        self.deny = set(deny)
        self.asked: list[tuple[str, str, str, str, str, str]] = []

    async def __call__(self, a: types.Attributes) -> None:
        assert a.user is ALICE and a.verb == "impersonate"
        self.asked.append((a.api_group, a.resource, a.subresource, a.namespace, a.name, a.verb))
        if (a.resource, a.name) in self.deny:
            raise errors.forbidden(f"{a.resource} {a.name} denied")


def headers(*pairs: tuple[str, str]) -> dict[str, list[str]] | None:
    return impersonation.requested([(k.encode(), v.encode()) for k, v in pairs])


async def test_no_headers_means_no_impersonation() -> None:
    assert headers(("Authorization", "Bearer x"), ("Accept", "*/*")) is None


async def test_a_user_with_groups_uid_and_extras() -> None:
    asked = headers(
        ("Impersonate-User", "bob"), ("Impersonate-Group", "team-a"), ("Impersonate-Group", "team-b"),
        ("Impersonate-Uid", "1234"), ("Impersonate-Extra-Reason%2Fwhy", "debugging"),
    )  # fmt: skip
    assert asked is not None
    authorize = Recorder()
    user = await impersonation.impersonate(ALICE, asked, authorize)
    assert user == types.UserInfo(
        name="bob", groups=("team-a", "team-b", "system:authenticated"), uid="1234", extra={"reason/why": ("debugging",)}
    )
    assert authorize.asked == [
        ("", "users", "", "", "bob", "impersonate"),
        ("", "groups", "", "", "team-a", "impersonate"),
        ("", "groups", "", "", "team-b", "impersonate"),
        ("authentication.k8s.io", "uids", "", "", "1234", "impersonate"),
        ("authentication.k8s.io", "userextras", "reason/why", "", "debugging", "impersonate"),
    ]


async def test_a_service_account_gets_its_own_groups_and_is_checked_in_its_namespace() -> None:
    asked = headers(("Impersonate-User", "system:serviceaccount:apps:builder"))
    assert asked is not None
    authorize = Recorder()
    user = await impersonation.impersonate(ALICE, asked, authorize)
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:apps", "system:authenticated")
    assert authorize.asked == [("", "serviceaccounts", "", "apps", "builder", "impersonate")]


@pytest.mark.parametrize(
    ("name", "groups", "expected"),
    [
        ("bob", ("system:unauthenticated",), ("system:unauthenticated",)),
        ("bob", ("system:authenticated",), ("system:authenticated",)),
        ("system:anonymous", (), ()),
    ],
)
async def test_system_authenticated_is_added_only_where_upstream_adds_it(
    name: str, groups: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    asked = headers(("Impersonate-User", name), *(("Impersonate-Group", g) for g in groups))
    assert asked is not None
    assert (await impersonation.impersonate(ALICE, asked, Recorder())).groups == expected


async def test_a_denied_part_refuses_the_whole_request() -> None:
    asked = headers(("Impersonate-User", "bob"), ("Impersonate-Group", "system:masters"))
    assert asked is not None
    with pytest.raises(errors.ApiError) as caught:
        await impersonation.impersonate(ALICE, asked, Recorder(("groups", "system:masters")))
    assert caught.value.code == 403


async def test_impersonating_without_a_user_is_a_bad_request() -> None:
    asked = headers(("Impersonate-Group", "system:masters"))
    assert asked is not None
    with pytest.raises(errors.ApiError) as caught:
        await impersonation.impersonate(ALICE, asked, Recorder())
    assert caught.value.code == 400
