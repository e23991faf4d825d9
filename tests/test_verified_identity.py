"""Verified identities: Identity.from_token, connect(identity_token=), acting_as(token=),
[identity] require_verified — keys, JWKS and tokens made in the test, real PostgreSQL."""

from __future__ import annotations

import json
import pickle
import time

import pytest

import governed_db
from governed_db import Identity, acting_as, errors
from governed_db.audit import AuditLog
from governed_db.policy import parse_policy

from .fix_tokens import AUD, ISS, hs256_with, issuer, jwks_server, tamper, unsigned  # noqa: F401

KW = {"issuer": ISS, "audience": AUD, "kind": "ai_agent"}


def verify(issuer, token, **kw):
    return Identity.from_token(token, jwks=issuer.jwks, **{**KW, **kw})


def policy_text(issuer, extra_oidc: str = "", identity: str = "", jwks: str | None = None):
    jwks_line = f"jwks = {json.dumps(jwks)}" if jwks else ""
    return f"""
[identity]
{identity}

[identity.oidc]
issuer = "{ISS}"
audience = "{AUD}"
{jwks_line}
{extra_oidc}
"""


def oidc_policy(issuer, tmp_path, *, extra_oidc="", identity=""):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks))
    return parse_policy(policy_text(issuer, extra_oidc, identity, str(path)),
                        source=str(tmp_path / "policy.toml"))


# -- accepted -----------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "RS384", "PS256", "PS512", "ES256", "EdDSA"])
def test_valid_token_accepted_every_asymmetric_family(issuer, alg):
    ident = verify(issuer, issuer.mint(alg=alg, jti=f"j-{alg}"))
    assert (ident.id, ident.kind, ident.verified) == ("recs-bot", "ai_agent", True)
    assert (ident.issuer, ident.subject, ident.token_id) == (ISS, "recs-bot", f"j-{alg}")
    assert ident.expires_at is not None and ident.expires_at > time.time()


def test_constructed_identity_is_never_verified():
    ident = Identity("recs-bot", "ai_agent")
    assert not ident.verified and ident.issuer is None and ident.subject is None
    with pytest.raises(TypeError):
        Identity("recs-bot", "ai_agent", verification=object())  # type: ignore[call-arg]
    assert ident.to_record()["verified"] is False


def test_evolve_keeps_verification_only_for_call_context(issuer):
    ident = verify(issuer, issuer.mint())
    assert ident.evolve(attributes={"tool_call_id": "t1"}).verified
    assert ident.evolve(purpose="another reason").verified
    for change in ({"roles": ("admin",)}, {"id": "other"}, {"kind": "human"},
                   {"tenant": "acme"}, {"on_behalf_of": "bob"}, {"model": "x"}):
        assert not ident.evolve(**change).verified, change


def test_audience_list_and_bearer_prefix(issuer):
    tok = issuer.mint(aud=["other", AUD])
    assert verify(issuer, "Bearer " + tok).verified
    assert verify(issuer, tok.encode()).verified


def test_leeway_is_bounded_and_applied(issuer, tmp_path):
    tok = issuer.mint(exp=int(time.time()) - 10)
    with pytest.raises(errors.TokenExpired):
        verify(issuer, tok, policy=oidc_policy(issuer, tmp_path,
                                                extra_oidc="leeway_seconds = 0"))
    ok = verify(issuer, tok, policy=oidc_policy(issuer, tmp_path,
                                                 extra_oidc="leeway_seconds = 60"))
    assert ok.verified
    with pytest.raises(errors.PolicyError, match="leeway_seconds must be 0..300"):
        oidc_policy(issuer, tmp_path, extra_oidc="leeway_seconds = 3600")


# -- refused, each with its own error -----------------------------------------------------------

def _refusals(issuer):
    now = int(time.time())
    other = type(issuer)()  # another IdP's keys, same kids
    good = issuer.mint()
    claims = issuer.claims()
    return {
        "expired": (issuer.mint(exp=now - 3600), errors.TokenExpired, "expired"),
        "not-yet-valid": (issuer.mint(nbf=now + 3600), errors.TokenNotYetValid,
                          "not-yet-valid"),
        "iat-in-future": (issuer.mint(iat=now + 3600), errors.TokenNotYetValid,
                          "not-yet-valid"),
        "wrong-issuer": (issuer.mint(iss="https://evil.example"), errors.WrongIssuer,
                         "issuer"),
        "no-issuer": (issuer.mint(iss=None), errors.WrongIssuer, "issuer"),
        "wrong-audience": (issuer.mint(aud="someone-else"), errors.WrongAudience,
                           "audience"),
        "no-audience": (issuer.mint(aud=None), errors.WrongAudience, "audience"),
        "wrong-key": (other.mint(), errors.BadSignature, "signature"),
        "unknown-kid": (issuer.mint(kid="rotated-away"), errors.KeyNotFound, "key"),
        "alg-none": (unsigned(claims), errors.AlgorithmRefused, "algorithm"),
        "alg-None": (unsigned(claims, alg="None"), errors.AlgorithmRefused, "algorithm"),
        "hs256-public-pem": (hs256_with(issuer.public_pem(), claims), errors.AlgorithmRefused,
                             "algorithm"),
        "hs256-public-jwk": (hs256_with(json.dumps(issuer.jwks["keys"][0]).encode(), claims),
                             errors.AlgorithmRefused, "algorithm"),
        "tampered-sub": (tamper(good, sub="admin"), errors.BadSignature, "signature"),
        "tampered-exp": (tamper(issuer.mint(exp=now - 3600), exp=now + 3600),
                         errors.BadSignature, "signature"),
        "signature-stripped": (good.rsplit(".", 1)[0] + ".", errors.BadSignature,
                               "signature"),
        "rs-header-ec-key": (issuer.mint(alg="ES256", kid="rsa-1"), errors.KeyNotFound,
                             "key"),
        "no-exp": (issuer.mint(exp=None), errors.TokenRejected, "claims"),
        "no-sub": (issuer.mint(sub=None), errors.TokenRejected, "claims"),
        "exp-not-number": (issuer.mint(exp="tomorrow"), errors.TokenMalformed, "malformed"),
        "not-a-jwt": ("not-a-token", errors.TokenMalformed, "malformed"),
        "jwe-five-parts": ("a.b.c.d.e", errors.TokenMalformed, "malformed"),
        "header-garbage": ("!!!." + good.split(".", 1)[1], errors.TokenMalformed, "malformed"),
    }


REFUSALS = [
    "expired", "not-yet-valid", "iat-in-future", "wrong-issuer", "no-issuer", "wrong-audience",
    "no-audience", "wrong-key", "unknown-kid", "alg-none", "alg-None", "hs256-public-pem",
    "hs256-public-jwk", "tampered-sub", "tampered-exp", "signature-stripped",
    "rs-header-ec-key", "no-exp", "no-sub", "exp-not-number", "not-a-jwt", "jwe-five-parts",
    "header-garbage"]


@pytest.mark.parametrize("case", REFUSALS)
def test_each_bad_token_refused_with_its_error(issuer, case):
    token, cls, reason = _refusals(issuer)[case]
    with pytest.raises(cls) as info:
        verify(issuer, token)
    exc = info.value
    assert isinstance(exc, errors.IdentityError) and isinstance(exc, governed_db.OperationalError)
    assert exc.reason == reason
    # The message never carries the token (nor its signature).
    assert token not in str(exc)
    sig = token.split(".")[-1]
    assert len(sig) < 16 or sig not in str(exc)


def test_policy_can_narrow_algorithms(issuer, tmp_path):
    pol = oidc_policy(issuer, tmp_path, extra_oidc='algorithms = ["ES256"]')
    assert verify(issuer, issuer.mint(alg="ES256"), policy=pol).verified
    with pytest.raises(errors.AlgorithmRefused):
        verify(issuer, issuer.mint(alg="RS256"), policy=pol)


@pytest.mark.parametrize("algs", ['["HS256"]', '["none"]', '["RS256", "HS512"]', "[]"])
def test_symmetric_algorithms_cannot_be_configured(issuer, tmp_path, algs):
    with pytest.raises(errors.PolicyError, match="only asymmetric"):
        oidc_policy(issuer, tmp_path, extra_oidc=f"algorithms = {algs}")


def test_short_rsa_key_refused(issuer):
    from cryptography.hazmat.primitives.asymmetric import rsa

    issuer.keys["rsa"] = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks = {"keys": [issuer.jwk("rsa")]}
    with pytest.warns(Warning, match="1024 bits"):
        tok = issuer.mint()  # (PyJWT warns the signer too)
    with pytest.raises(errors.KeysUnavailable, match="2048"):
        Identity.from_token(tok, jwks=jwks, **KW)


def test_no_kid_needs_an_unambiguous_jwks(issuer):
    tok = issuer.mint(alg="ES256", kid=False)
    assert Identity.from_token(tok, jwks={"keys": [issuer.jwk("ec")]}, **KW).verified
    two = {"keys": [issuer.jwk("ec"), issuer.jwk("ec", kid="ec-2")]}
    with pytest.raises(errors.KeyNotFound):
        Identity.from_token(tok, jwks=two, **KW)


def test_errors_pickle(issuer):
    try:
        verify(issuer, issuer.mint(iss="https://evil.example"))
    except errors.WrongIssuer as exc:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is errors.WrongIssuer and back.reason == "issuer"
        assert str(back) == str(exc)


# -- JWKS sources ------------------------------------------------------------------------------

def test_jwks_file_offline_and_rotation(issuer, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks))
    assert Identity.from_token(issuer.mint(), jwks=path, **KW).verified
    assert Identity.from_token(issuer.mint(), jwks=str(path), **KW).verified
    # Rotation: the new file (another size/mtime) is read at once.
    rotated = type(issuer)()
    path.write_text(json.dumps({"keys": [rotated.jwk("rsa", kid="rsa-2")]}))
    assert Identity.from_token(rotated.mint(kid="rsa-2"), jwks=path, **KW).verified
    with pytest.raises(errors.KeyNotFound):
        Identity.from_token(issuer.mint(), jwks=path, **KW)


def test_jwks_file_missing_or_bad(issuer, tmp_path):
    with pytest.raises(errors.KeysUnavailable, match="cannot read the JWKS file"):
        Identity.from_token(issuer.mint(), jwks=tmp_path / "nope.json", **KW)
    bad = tmp_path / "bad.json"
    bad.write_text('{"no": "keys"}')
    with pytest.raises(errors.KeysUnavailable, match="keys"):
        Identity.from_token(issuer.mint(), jwks=bad, **KW)


def test_jwks_url_cached_with_ttl_and_refetched_for_new_kid(issuer, jwks_server, tmp_path):
    pol = parse_policy(policy_text(issuer, "jwks_ttl_seconds = 300", jwks=jwks_server.url))
    for _ in range(5):
        assert Identity.from_token(issuer.mint(), policy=pol, kind="ai_agent").verified
    assert jwks_server.fetches == 1  # cached for the TTL
    # A rotated key: an unknown kid makes one refetch (PyJWT's cooldown bounds it).
    rotated = type(issuer)()
    jwks_server.jwks = {"keys": [*issuer.jwks["keys"], rotated.jwk("ec", kid="ec-new")]}
    from governed_db import _tokens

    for client in _tokens._sources.values():
        client._last_successful_fetch = None  # the cooldown has passed
    assert Identity.from_token(rotated.mint(alg="ES256", kid="ec-new"), policy=pol,
                               kind="ai_agent").verified
    assert jwks_server.fetches == 2


def test_jwks_url_unreachable(issuer):
    with pytest.raises(errors.KeysUnavailable, match="cannot fetch the JWKS"):
        Identity.from_token(issuer.mint(), jwks="http://127.0.0.1:9/jwks.json", **KW)


def test_jwks_plain_http_only_on_loopback(issuer):
    with pytest.raises(errors.IdentityError, match="https"):
        Identity.from_token(issuer.mint(), jwks="http://idp.example.com/jwks", **KW)


# -- claim mapping -------------------------------------------------------------------------------

def test_policy_maps_claims(issuer, tmp_path):
    pol = oidc_policy(issuer, tmp_path, extra_oidc="""
kind_claim = "gdb_kind"
roles_claim = "roles"
purpose_claim = "purpose"
model_claim = "model"
tenant_claim = "tid"
""")
    tok = issuer.mint(gdb_kind="ai_agent", roles=["support", "reader"], purpose="tickets",
                      model="claude", tid="acme")
    ident = Identity.from_token(tok, policy=pol)
    assert (ident.kind, ident.roles, ident.purpose, ident.model, ident.tenant) == (
        "ai_agent", ("support", "reader"), "tickets", "claude", "acme")
    scoped = Identity.from_token(issuer.mint(gdb_kind="human", roles="a b"), policy=pol)
    assert (scoped.kind, scoped.roles) == ("human", ("a", "b"))
    with pytest.raises(errors.TokenRejected, match="kind"):
        Identity.from_token(issuer.mint(gdb_kind="root"), policy=pol)
    with pytest.raises(errors.TokenRejected, match="roles"):
        Identity.from_token(issuer.mint(gdb_kind="human", roles={"x": 1}), policy=pol)
    with pytest.raises(errors.TokenRejected, match="kind is unknown"):
        Identity.from_token(issuer.mint(), policy=pol)


def test_delegated_token_act_and_azp(issuer, tmp_path):
    pol = oidc_policy(issuer, tmp_path, extra_oidc='kind = "ai_agent"')
    tok = issuer.mint(sub="maria", act={"sub": "recs-bot"})
    ident = Identity.from_token(tok, policy=pol)
    assert (ident.id, ident.on_behalf_of, ident.subject) == ("recs-bot", "maria", "maria")
    with pytest.raises(errors.TokenRejected, match="act"):
        Identity.from_token(issuer.mint(act="recs-bot"), policy=pol)
    # azp only when the policy says so
    azp_tok = issuer.mint(sub="maria", azp="recs-bot")
    assert Identity.from_token(azp_tok, policy=pol).id == "maria"
    pol2 = oidc_policy(issuer, tmp_path, extra_oidc='kind = "ai_agent"\ndelegation = ["azp"]')
    ident = Identity.from_token(azp_tok, policy=pol2)
    assert (ident.id, ident.on_behalf_of) == ("recs-bot", "maria")


@pytest.mark.parametrize("bad, match", [
    ('unknown_key = 1', "unknown key"),
    ('jwks_ttl_seconds = 0', "jwks_ttl_seconds"),
    ('kind = "robot"', "kind must be one of"),
    ('delegation = ["obo"]', "delegation"),
])
def test_oidc_section_validated_at_load(issuer, tmp_path, bad, match):
    with pytest.raises(errors.PolicyError, match=match) as info:
        oidc_policy(issuer, tmp_path, extra_oidc=bad)
    assert "policy.toml" in str(info.value)


@pytest.mark.parametrize("bad, match", [
    ('require_verified = ["robot"]', "require_verified"),
    ('require_verified = "human"', "require_verified"),
    ('approver_roles = "x"', "approver_roles"),
    ('other = 1', "unknown key"),
])
def test_identity_section_validated_at_load(issuer, tmp_path, bad, match):
    with pytest.raises(errors.PolicyError, match=match):
        oidc_policy(issuer, tmp_path, identity=bad)


def test_relative_jwks_path_is_next_to_the_policy(issuer, tmp_path):
    (tmp_path / "keys.json").write_text(json.dumps(issuer.jwks))
    pol = tmp_path / "policy.toml"
    pol.write_text(policy_text(issuer, 'kind = "service"', jwks="keys.json"))
    loaded = governed_db.policy.load_policy(pol)
    assert Identity.from_token(issuer.mint(), policy=loaded).kind == "service"


# -- connections ---------------------------------------------------------------------------------

@pytest.fixture
def pol(issuer, tmp_path):
    return oidc_policy(issuer, tmp_path, extra_oidc='kind = "ai_agent"',
                       identity='require_verified = ["ai_agent"]')


async def _connect(is_async, dsn, **kw):
    if is_async:
        return await governed_db.AsyncConnection.connect(dsn, **kw)
    return governed_db.connect(dsn, **kw)


async def _run(conn, sql):
    cur = conn.execute(sql)
    if hasattr(cur, "__await__"):
        cur = await cur
        return await cur.fetchall()
    return cur.fetchall()


async def _close(conn):
    res = conn.close()
    if hasattr(res, "__await__"):
        await res


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_connect_with_identity_token_records_claims_not_token(
        issuer, pol, dsn, is_async):
    audit = AuditLog.in_memory()
    tok = issuer.mint(jti="jti-connect")
    conn = await _connect(is_async, dsn, identity_token=tok, policy=pol, audit=audit)
    try:
        assert conn.identity.verified and conn.identity.id == "recs-bot"
        assert await _run(conn, "SELECT 1") == [(1,)]
    finally:
        await _close(conn)
    audit.flush()
    recs = [r for r in audit.records if r.get("type") == "statement"]
    ident = recs[-1]["identity"]
    assert (ident["verified"], ident["issuer"], ident["subject"], ident["jti"]) == (
        True, ISS, "recs-bot", "jti-connect")
    dump = json.dumps(audit.records)
    assert tok not in dump and tok.split(".")[2] not in dump and tok.split(".")[1] not in dump
    audit.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_require_verified_at_connect(issuer, pol, dsn, is_async):
    audit = AuditLog.in_memory()
    with pytest.raises(errors.VerificationRequired, match="require_verified") as info:
        await _connect(is_async, dsn, identity=Identity("recs-bot", "ai_agent"), policy=pol,
                       audit=audit)
    assert info.value.reason == "unverified"
    # Other kinds are not required to be verified by this policy.
    conn = await _connect(is_async, dsn, identity=Identity("alice", "human"), policy=pol,
                          audit=audit)
    assert await _run(conn, "SELECT 1") == [(1,)]
    await _close(conn)
    with pytest.raises(errors.TokenExpired):
        await _connect(is_async, dsn, identity_token=issuer.mint(exp=int(time.time()) - 999),
                       policy=pol, audit=audit)
    audit.flush()
    refused = [r for r in audit.records if r.get("type") == "identity_refused"]
    assert [r["reason"] for r in refused] == ["unverified"]
    audit.close()


def test_require_verified_per_statement_and_acting_as(issuer, pol, dsn):
    audit = AuditLog.in_memory()
    conn = governed_db.connect(dsn, identity=Identity("alice", "human"), policy=pol,
                               audit=audit, autocommit=True)
    try:
        # acting_as on a connection whose policy requires it: refused at the statement.
        with acting_as(Identity("recs-bot", "ai_agent")):
            with pytest.raises(errors.VerificationRequired):
                conn.execute("SELECT 1")
        with pytest.raises(errors.VerificationRequired):
            conn.identity = Identity("recs-bot", "ai_agent")
        with acting_as(verify(issuer, issuer.mint())):
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
        # acting_as itself checks the process policy (configure(policy=...)).
        governed_db.configure(policy=pol)
        with pytest.raises(errors.VerificationRequired):
            with acting_as(Identity("recs-bot", "ai_agent")):
                pass
        with acting_as(token=issuer.mint(jti="via-acting-as")) as ident:
            assert ident.verified and ident.token_id == "via-acting-as"
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
        with pytest.raises(TypeError):
            with acting_as(Identity("a", "human"), token="x"):
                pass
    finally:
        conn.close()
        audit.close()


def test_token_expiry_stops_a_session_mid_way(issuer, tmp_path, dsn):
    pol = oidc_policy(issuer, tmp_path, extra_oidc='kind = "ai_agent"\nleeway_seconds = 0')
    audit = AuditLog.in_memory()
    tok = issuer.mint(exp=int(time.time()) + 2)
    conn = governed_db.connect(dsn, identity_token=tok, policy=pol, audit=audit)
    try:
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
        time.sleep(max(0.0, conn.identity.expires_at - time.time()) + 0.05)
        with pytest.raises(errors.TokenExpired, match="has expired"):
            conn.execute("SELECT 1")
        # and the statement never reached the server
        audit.flush()
        assert [r["reason"] for r in audit.records if r.get("type") == "identity_refused"] \
            == ["expired"]
    finally:
        conn.close()
        audit.close()


def test_identity_token_and_identity_exclusive(issuer, pol, dsn):
    with pytest.raises(errors.PolicyError, match="not both"):
        governed_db.connect(dsn, identity=Identity("a", "human"), identity_token="x.y.z",
                            policy=pol)


def test_identity_token_without_oidc_config(issuer, dsn):
    with pytest.raises(errors.IdentityError, match=r"\[identity.oidc\]") as info:
        governed_db.connect(dsn, identity_token=issuer.mint())
    assert info.value.reason == "configuration"


def test_policy_check_knows_the_identity_section(issuer, tmp_path):
    from governed_db.policy import check_policy

    (tmp_path / "keys.json").write_text(json.dumps(issuer.jwks))
    good = tmp_path / "good.toml"
    good.write_text(policy_text(issuer, 'kind = "service"', 'require_verified = ["human"]',
                                jwks="keys.json"))
    assert check_policy(good).errors == ()
    bad = tmp_path / "bad.toml"
    bad.write_text(policy_text(issuer, 'algorithms = ["HS256"]', jwks="keys.json"))
    found = check_policy(bad).errors
    assert found and "only asymmetric" in found[0].message


# -- spans --------------------------------------------------------------------------------------

@pytest.fixture
def otel():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from governed_db import telemetry

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_providers(tp)
    yield exporter
    telemetry.use_providers()


def test_spans_carry_issuer_subject_jti_never_the_token(issuer, pol, dsn, otel):
    audit = AuditLog.in_memory()
    tok = issuer.mint(jti="span-jti")
    delegated = issuer.mint(sub="maria", act={"sub": "recs-bot"}, jti="deleg-jti")
    conn = governed_db.connect(dsn, identity_token=tok, policy=pol, audit=audit)
    try:
        conn.execute("SELECT 1").fetchall()
        with acting_as(Identity.from_token(delegated, policy=pol)):
            conn.execute("SELECT 2").fetchall()
        with acting_as(Identity("alice", "human")):
            conn.execute("SELECT 3").fetchall()
    finally:
        conn.close()
        audit.close()
    spans = [dict(s.attributes) for s in otel.get_finished_spans()
             if "db.query.text" in s.attributes]
    first, second, third = spans[-3:]
    assert (first["governed_db.identity.verified"], first["governed_db.identity.issuer"],
            first["governed_db.identity.subject"], first["governed_db.identity.token_id"]) == (
        True, ISS, "recs-bot", "span-jti")
    # A delegated token's subject is the person acted for: pseudonymous, not in clear.
    assert "governed_db.identity.subject" not in second
    assert second["governed_db.identity.subject.pseudo"] and "maria" not in json.dumps(second)
    assert not any(k.startswith("governed_db.identity.verified") for k in third)
    dump = json.dumps(spans)
    for part in tok.split(".") + delegated.split("."):
        assert part not in dump
