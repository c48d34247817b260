"""schemathesis hooks for tests/api/openapi.rs (loaded with SCHEMATHESIS_HOOKS=hooks).

`keyward_headers`: where the document describes a response, its headers are
exactly what the response carries. Every header the response has must be
documented (but for those HTTP itself adds), and the ones keyward promises
must be there: `X-Request-Id` on every response, `WWW-Authenticate` on 401
and 403, `Retry-After` on 429 and 503, `Cache-Control` on `/v1/auth`.
(OpenAPI can mark a response header required, but the generator we use
cannot say so; this check holds the service to it instead.)

`before_call`: a generated `expires_at` above the document's bound is moved
as far past the moment it is sent (see below); a webhook's http(s) URL is
pointed at 127.0.0.1:9, so deliveries never leave the machine; a credits'
`low_at` at or above what the balance starts from is brought below it (see
below).
"""

import time
from urllib.parse import urlsplit

import schemathesis

# Added by HTTP itself, never described in OpenAPI (Content-Type is the
# media type, checked by content_type_conformance).
TRANSPORT = {"content-type", "content-length", "date", "connection", "transfer-encoding", "keep-alive"}


def error_code(response):
    try:
        return response.json()["error"]["code"]
    except Exception:
        return None


def promised(case, status, response=None):
    code = error_code(response) if response is not None else None
    names = {"x-request-id"}
    # A role's refusal (insufficient_permission) is not an auth challenge.
    if status == 401 or (status == 403 and code != "insufficient_permission"):
        names.add("www-authenticate")
    # Credits that never refill have no time to retry after.
    if status == 503 or (status == 429 and code != "credits_exhausted"):
        names.add("retry-after")
    if case.operation.path.startswith("/v1/auth"):
        names.add("cache-control")
    return names


@schemathesis.check
def keyward_headers(ctx, response, case):
    definition = case.operation.responses.find_by_status_code(response.status_code)
    if definition is None:
        return None  # status_code_conformance reports it
    headers = definition.headers.items() if definition.headers else []
    documented = {name.lower() for name, _ in headers}
    present = {name.lower() for name in response.headers}
    undocumented = sorted(present - documented - TRANSPORT)
    if undocumented:
        raise AssertionError(
            f"{case.operation.label} {response.status_code}: undocumented response headers {undocumented}"
        )
    missing = sorted(promised(case, response.status_code, response) - present)
    if missing:
        raise AssertionError(f"{case.operation.label} {response.status_code}: missing headers {missing}")
    return True


# (operation label, status) answers the run must have seen: the success and
# refusal paths of validation, exercised with the live keys the test mints
# (see tests/api/openapi.rs), and every error answer of the API-key path.
MUST_REACH = {
    ("POST /v1/validate-key", 200),
    ("POST /v1/validate-key", 401),
    ("POST /v1/validate-key", 422),
    ("POST /v1/mint-key", 201),
    ("GET /v1/get-key", 200),
    ("GET /v1/list-keys", 200),
    ("POST /v1/update-key", 200),
}
# Reached on some /v1/auth operation (any method and path): which ones get
# there first depends on the order the key's rate limit runs out in.
MUST_REACH_AUTH = {200, 403, 422, 429}


@schemathesis.check
class keyward_reached:
    """Fail unless the run reached every answer in MUST_REACH: a run that
    never got past 401 would check nothing of what a valid key gets back."""

    def __init__(self):
        self.seen = set()

    def after_response(self, ctx, response, case):
        self.seen.add((case.operation.label, response.status_code))
        return True

    def after_run(self, ctx):
        missing = sorted(MUST_REACH - self.seen)
        auth = {status for label, status in self.seen if label.split(" ")[-1].startswith("/v1/auth")}
        missing += sorted(f"/v1/auth {status}" for status in MUST_REACH_AUTH - auth)
        if missing:
            raise AssertionError(f"never answered: {missing}")


# `expires_at` must be in the future when keyward reads it, which no schema
# can say: the document's `exclusiveMinimum` is the moment it was generated,
# and a value just above it is in the past by the time the run sends it. So,
# as each request leaves, a value above the bound is moved on by the time
# since then, plus a minute for the request to arrive: it is as far in the
# future when keyward reads it as it was above the bound. A value at or below
# the bound stays, and stays in the past.
@schemathesis.hook
def before_call(ctx, case, kwargs):
    url = case.body.get("url") if isinstance(case.body, dict) else None
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        # Tests only talk to loopback: the run's keyward allows it
        # (KEYWARD_WEBHOOK_ALLOW_PRIVATE), and port 9 refuses.
        try:
            local = urlsplit(url)._replace(netloc="127.0.0.1:9").geturl()
            case.body = {**case.body, "url": local}
        except ValueError:
            pass
    at = case.body.get("expires_at") if isinstance(case.body, dict) else None
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        schemas = case.operation.schema.raw_schema["components"]["schemas"]
        bound = schemas["MintIn"]["properties"]["expires_at"]["exclusiveMinimum"]
        if at > bound:
            # A new body: generated cases may share the old one.
            case.body = {**case.body, "expires_at": at + (time.time() + 60 - bound)}
    credits = case.body.get("credits") if isinstance(case.body, dict) else None
    if isinstance(credits, dict):
        case.body = {**case.body, "credits": below_start(credits)}


# `low_at` must be below the refill amount (without a refill, below
# `remaining`): a threshold the balance starts at or under could never be
# crossed. That relates two fields, which no schema can say, so a generated
# `low_at` (an integer the schema allows) at or above its bound is brought
# just below it, or left out when nothing is below it; anything else stays
# as generated, malformed values included.
def below_start(credits):
    low_at = whole(credits.get("low_at"))
    if low_at is None or low_at < 1:
        return credits
    refill = credits.get("refill")
    start = whole(refill.get("amount") if isinstance(refill, dict) else credits.get("remaining"))
    if start is None or low_at < start:
        return credits
    rest = {k: v for k, v in credits.items() if k != "low_at"}
    return {**rest, "low_at": start - 1} if start >= 2 else rest


def whole(value):
    """A JSON count as keyward reads it (`5.0` is 5), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)
