"""The settings added for faults and security are read from the environment and checked."""

import pytest

from cookline import config


def test_store_retry_budget():
    assert config.store_retry_seconds({}) == 30
    assert config.store_retry_seconds({"COOKLINE_STORE_RETRY_S": "2.5"}) == 2.5
    with pytest.raises(ValueError, match="COOKLINE_STORE_RETRY_S"):
        config.store_retry_seconds({"COOKLINE_STORE_RETRY_S": "-1"})


def test_keepalive_clients_ping_and_servers_accept_the_pings():
    options = dict(config.grpc_options({"COOKLINE_KEEPALIVE_S": "20"}))
    assert options["grpc.keepalive_time_ms"] == 20_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= options["grpc.keepalive_time_ms"]
    assert dict(config.grpc_options({}))["grpc.keepalive_time_ms"] == 30_000
    for bad in ("0", "3601"):
        with pytest.raises(ValueError, match="COOKLINE_KEEPALIVE_S"):
            config.grpc_options({"COOKLINE_KEEPALIVE_S": bad})


def test_tls_settings(tmp_path):
    assert config.tls_server_credentials({}) is None and config.tls_ca({}) is None
    (tmp_path / "c.pem").write_bytes(b"CERT")
    (tmp_path / "k.pem").write_bytes(b"KEY")
    assert config.tls_server_credentials(
        {"COOKLINE_TLS_CERT": str(tmp_path / "c.pem"), "COOKLINE_TLS_KEY": str(tmp_path / "k.pem")}
    ) == (b"KEY", b"CERT")
    with pytest.raises(ValueError, match="set together"):
        config.tls_server_credentials({"COOKLINE_TLS_CERT": str(tmp_path / "c.pem")})
    with pytest.raises(ValueError, match="COOKLINE_TLS_CA: cannot read"):
        config.tls_ca({"COOKLINE_TLS_CA": str(tmp_path / "missing.pem")})


def test_auth_token_settings(tmp_path):
    assert config.auth_token({}) == ""
    (tmp_path / "token").write_text("  s3cret\n")
    assert config.auth_token({"COOKLINE_AUTH_TOKEN_FILE": str(tmp_path / "token")}) == "s3cret"
    # the variable wins over the file
    assert (
        config.auth_token({"COOKLINE_AUTH_TOKEN": "direct", "COOKLINE_AUTH_TOKEN_FILE": str(tmp_path / "token")})
        == "direct"
    )
    with pytest.raises(ValueError, match="COOKLINE_AUTH_TOKEN_FILE: cannot read .*missing"):
        config.auth_token({"COOKLINE_AUTH_TOKEN_FILE": str(tmp_path / "missing")})


def test_message_limit_is_one_setting_for_servers_and_clients():
    options = dict(config.client_options({"COOKLINE_MAX_MESSAGE_MB": "3"}))
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 3 << 20
    server = dict(config.grpc_options({"COOKLINE_MAX_MESSAGE_MB": "3"}))
    assert server["grpc.max_receive_message_length"] == 3 << 20
    with pytest.raises(ValueError, match="COOKLINE_MAX_MESSAGE_MB"):
        config.max_message_bytes({"COOKLINE_MAX_MESSAGE_MB": "0"})


def test_store_wait_is_read_from_the_environment():
    assert config.store_wait_seconds({}) == 60
    assert config.store_wait_seconds({"COOKLINE_STORE_WAIT_S": "2.5"}) == 2.5
    with pytest.raises(ValueError, match="COOKLINE_STORE_WAIT_S"):
        config.store_wait_seconds({"COOKLINE_STORE_WAIT_S": "-1"})
