"""The auth contract: who is asking (authentication) and may they (authorization)."""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented: a verified client certificate's subject and/or a bearer token."""

    cert_common_name: str | None = None
    cert_organizations: tuple[str, ...] = ()
    bearer_token: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    """One request as the authorizer sees it (Kubernetes' authorizer.Attributes)."""

    user: UserInfo
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection; or the HTTP verb for paths
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # for non-resource requests, e.g. /healthz


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authenticator(Protocol):
    async def authenticate(self, credentials: Credentials) -> UserInfo | None:
        """The user these credentials prove, or None when they prove nothing (then 401)."""
        ...


class Authorizer(Protocol):
    async def authorize(self, attributes: Attributes) -> Decision: ...
