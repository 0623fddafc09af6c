"""User impersonation: ``kubectl --as``, ``--as-group`` and ``--as-uid``.

A request may carry ``Impersonate-User``, ``Impersonate-Group`` (repeated),
``Impersonate-Uid`` and ``Impersonate-Extra-<key>`` (repeated, the key
percent-encoded) headers. As upstream's impersonation filter does, each thing
asked for is first authorized for the authenticated user with the verb
``impersonate``: ``users`` (or ``serviceaccounts`` in their namespace, for a
``system:serviceaccount:<ns>:<name>`` user) and ``groups`` in the core group,
``uids`` and ``userextras/<key>`` in ``authentication.k8s.io``. Only when every
one is allowed does the request go on, as the impersonated user: the groups
asked for (a service account's own groups when none are), plus
``system:authenticated`` unless ``system:authenticated`` or
``system:unauthenticated`` is among them or the user is ``system:anonymous``.
Anything impersonated without a user is a 400.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Iterable

from services.apiserver.auth import types
from services.machinery import errors

USER = "impersonate-user"
GROUP = "impersonate-group"
UID = "impersonate-uid"
EXTRA_PREFIX = "impersonate-extra-"
AUTHENTICATED, UNAUTHENTICATED, ANONYMOUS = "system:authenticated", "system:unauthenticated", "system:anonymous"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

Authorize = Callable[[types.Attributes], Awaitable[None]]  # raises the 403 when denied


def requested(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]] | None:
    """The impersonation headers of a request, lowercased, each with all its values; None if none."""
    found: dict[str, list[str]] = {}
    for key, value in raw_headers:
        name = key.decode("latin-1").lower()
        if name in (USER, GROUP, UID) or name.startswith(EXTRA_PREFIX):
            found.setdefault(name, []).append(value.decode("latin-1"))
    return found or None


async def impersonate(user: types.UserInfo, asked: dict[str, list[str]], authorize: Authorize) -> types.UserInfo:
    """The user ``user`` acts as, once each part of ``asked`` is authorized for ``user``."""
    names = asked.get(USER) or []
    if not names or not names[0]:
        parts = sorted(asked)
        raise errors.bad_request(f"requested {parts} without impersonating a user")
    name = names[0]
    groups = list(asked.get(GROUP) or ())
    uid = (asked.get(UID) or [""])[0]
    extra = {
        urllib.parse.unquote(key.removeprefix(EXTRA_PREFIX)).lower(): tuple(values)
        for key, values in asked.items()
        if key.startswith(EXTRA_PREFIX)
    }

    def check(resource: str, target: str, *, group: str = "", namespace: str = "", subresource: str = "") -> Awaitable[None]:
        return authorize(types.Attributes(
            user=user, verb="impersonate", api_group=group, resource=resource, subresource=subresource,
            name=target, namespace=namespace,
        ))  # fmt: skip

    service_account = _service_account(name)
    if service_account is not None:
        namespace, account = service_account
        await check("serviceaccounts", account, namespace=namespace)
        if not groups:  # a service account's groups are known: its own
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    else:
        await check("users", name)
    for group in asked.get(GROUP) or ():
        await check("groups", group)
    if uid:
        await check("uids", uid, group="authentication.k8s.io")
    for key, values in extra.items():
        for value in values:
            await check("userextras", value, group="authentication.k8s.io", subresource=key)
    if name != ANONYMOUS and not {AUTHENTICATED, UNAUTHENTICATED} & set(groups):
        groups.append(AUTHENTICATED)
    return types.UserInfo(name=name, groups=tuple(groups), uid=uid, extra=extra)


def _service_account(name: str) -> tuple[str, str] | None:
    """(namespace, name) of a ``system:serviceaccount:<ns>:<name>`` user name."""
    if not name.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, sep, account = name.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    return (namespace, account) if sep and namespace and account else None
