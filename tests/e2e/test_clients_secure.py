"""The Node.js and Go clients against a stack that demands a bearer token and speaks only TLS.

Every service gets COOKLINE_AUTH_TOKEN and a certificate signed by a CA made here
(helpers.make_certificates); the client suites get the same COOKLINE_AUTH_TOKEN and
COOKLINE_TLS_CA, as a user would set them. Their whole live suites (submit iris, follow it,
predict unary and streamed, errors) then run over TLS with the token, and their secure
checks must each run and pass: a wrong or missing token is UNAUTHENTICATED, a client without
the CA or trusting another CA cannot connect (UNAVAILABLE), the token file variant and the
constructor/Config options work."""

import glob
import os
import re

import pytest

import raw_models
from helpers import ROOT, make_certificates
from tools import run, tool

NODE_DIR = os.path.join(ROOT, "clients", "node")
GO_DIR = os.path.join(ROOT, "clients", "go")
TOKEN = "clients-t0ken-for-tests"


def STACK_ENV(tmp_path_factory):  # the stack fixture's hook
    return dict(make_certificates(str(tmp_path_factory.mktemp("tls"))), COOKLINE_AUTH_TOKEN=TOKEN)


@pytest.fixture(scope="module")
def client_env(stack, tmp_path_factory):
    """The stack's settings (addresses, token, CA) plus COOKLINE_TEST_OTHER_CA, a CA that did not
    sign the servers' certificates."""
    _, env = stack
    other = make_certificates(str(tmp_path_factory.mktemp("other-ca")))
    raw = raw_models.deploy_for_clients(env, str(tmp_path_factory.mktemp("raw")))  # the raw-input suites' models
    return dict(env, COOKLINE_TEST_OTHER_CA=other["COOKLINE_TLS_CA"], **raw)


NODE_SECURE_CHECKS = [
    "a client with the settings from the environment passes",
    "the same settings as constructor options pass, with no other environment",
    "a client with a wrong token is UNAUTHENTICATED",
    "a client without a token is UNAUTHENTICATED",
    "the token read from COOKLINE_AUTH_TOKEN_FILE passes",
    "a client without the CA (plaintext) cannot connect: UNAVAILABLE",
    "a client trusting another CA cannot connect: UNAVAILABLE",
]

GO_SECURE_CHECKS = [
    "SettingsFromTheEnvironmentPass",
    "TheSameSettingsInConfigPassWithNoOtherEnvironment",
    "WrongTokenIsUnauthenticated",
    "NoTokenIsUnauthenticated",
    "TokenFromTheFilePasses",
    "WithoutTheCAPlaintextCannotConnect",
    "TrustingAnotherCACannotConnect",
]


def test_node_client_suite_passes_with_token_and_tls(client_env):
    suites = sorted(glob.glob(os.path.join(NODE_DIR, "test", "*.test.js")))
    assert suites, "no clients/node/test/*.test.js"
    proc = run([tool("node"), "--test", *suites], env=client_env, cwd=NODE_DIR)
    out = proc.stdout
    assert "# fail 0" in out and "# pass 0" not in out and "# skipped 0" in out, out
    assert re.search(r"^\s*ok \d+ - a live stack$", out, re.M), out  # the plaintext suite, now over TLS + token
    for name in NODE_SECURE_CHECKS:
        assert re.search(rf"^\s*ok \d+ - {re.escape(name)}$", out, re.M), f"{name!r} did not pass\n{out}"
    assert "a client carrying a token works against a stack that demands none" not in out


def test_go_client_suite_passes_with_token_and_tls(client_env):
    proc = run([tool("go"), "test", "-count=1", "-v", "./..."], env=client_env, cwd=GO_DIR)
    out = proc.stdout
    assert "--- PASS: TestStack " in out and "FAIL" not in out and "SKIP" not in out, out
    for name in GO_SECURE_CHECKS:
        assert f"--- PASS: TestSecureStack/{name} " in out, f"{name} did not pass\n{out}"
    assert "ATokenWorksAgainstAStackThatDemandsNone" not in out
