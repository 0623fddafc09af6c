"""serviceaccounts/<name>/token: TokenRequest, a signed service account JWT."""

from __future__ import annotations

import datetime

from services.apiserver import context, responses
from services.apiserver.auth import authn
from services.machinery import errors

MIN_EXPIRATION = 600


async def token_request(ctx: context.Request) -> responses.Response:
    body = ctx.object_body()
    spec = body.get("spec") or {}
    namespace, name = ctx.info.namespace, ctx.info.name
    sa = await ctx.api.store.get(ctx.resource.key(namespace, name))
    if sa is None:
        raise errors.not_found("serviceaccounts", name)
    signer = ctx.api.authenticator.service_accounts
    if signer is None:
        raise errors.service_unavailable("service account token signing is not configured")
    expiration = spec.get("expirationSeconds") or 3600
    if not isinstance(expiration, int) or expiration < MIN_EXPIRATION:
        raise errors.invalid("TokenRequest", name, [errors.Cause("FieldValueInvalid", "may not specify a duration less than 10 minutes", "spec.expirationSeconds")], group="authentication.k8s.io")  # fmt: skip
    bound = None
    ref = spec.get("boundObjectRef")
    if ref:
        bound = authn.BoundObject(kind=ref.get("kind", ""), name=ref.get("name", ""), uid=ref.get("uid", ""))
    issued = authn.issue_service_account_token(
        signer,
        namespace=namespace,
        name=name,
        uid=sa.obj["metadata"].get("uid", ""),
        audiences=spec.get("audiences") or (),
        expiration_seconds=expiration,
        bound=bound,
    )
    expires = issued.expiration.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": {**spec, "expirationSeconds": expiration},
        "status": {"token": issued.token, "expirationTimestamp": expires},
    }
    return responses.json(out, 201)
