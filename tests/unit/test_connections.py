"""tasks/connections.py and tasks/app.py: TLS options for rediss:// URLs, on every client."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis

from tasks.app import create_app
from tasks.connections import connection_options, redis_client, tls_options
from tasks.errors import ConfigError
from tasks.settings import Settings

PLAIN = "redis://:pw@127.0.0.1:6390/0"
TLS = "rediss://:pw@127.0.0.1:6390/0"


@pytest.fixture()
def pem(tmp_path: Path) -> Path:
    # Only existence is checked before a handshake; nothing here connects.
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def pool_kwargs(client: redis.Redis) -> dict:
    return client.connection_pool.connection_kwargs


def test_plain_redis_url_gets_timeouts_and_no_tls():
    client = redis_client(PLAIN, Settings(broker_url=PLAIN))
    assert client.connection_pool.connection_class is redis.Connection
    kwargs = pool_kwargs(client)
    assert not any(k.startswith("ssl") for k in kwargs)
    assert all(kwargs[k] == v for k, v in connection_options().items())


def test_rediss_url_verifies_the_certificate_by_default_even_without_a_ca_file():
    client = redis_client(TLS, Settings(broker_url=TLS))
    assert client.connection_pool.connection_class is redis.SSLConnection
    kwargs = pool_kwargs(client)
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["ssl_ca_certs"] is None  # the system's trust store
    assert kwargs.get("ssl_check_hostname", True) is True
    assert all(kwargs[k] == v for k, v in connection_options().items())


def test_rediss_url_gets_the_ca_and_client_certificate_from_settings(pem: Path):
    s = Settings(broker_url=TLS, redis_ca_certs=str(pem), redis_certfile=str(pem), redis_keyfile=str(pem))
    kwargs = pool_kwargs(redis_client(TLS, s))
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (str(pem),) * 3
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_verification_is_off_only_when_redis_cert_reqs_says_none():
    assert tls_options(Settings(broker_url=TLS))["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert tls_options(Settings(broker_url=TLS, redis_cert_reqs="none"))["ssl_cert_reqs"] == ssl.CERT_NONE


@pytest.mark.parametrize("field", ["redis_ca_certs", "redis_certfile", "redis_keyfile"])
def test_a_missing_tls_file_is_a_config_error_naming_the_variable(field: str, pem: Path, tmp_path: Path):
    files = {"redis_certfile": str(pem), field: str(tmp_path / "nope.pem")}
    with pytest.raises(ConfigError, match=rf"INFERQ_{field.upper()}\): no file .*nope\.pem"):
        redis_client(TLS, Settings(broker_url=TLS, **files))


def test_celery_app_verifies_a_rediss_broker_and_backend(pem: Path):
    # kombu alone would connect to a rediss:// broker with CERT_NONE (and only warn).
    app = create_app(Settings(broker_url=TLS, redis_ca_certs=str(pem)))
    expected = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(pem)}
    assert expected.items() <= app.conf.broker_use_ssl.items()
    assert expected.items() <= app.conf.redis_backend_use_ssl.items()
    with app.connection() as conn:
        assert conn.ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    params = app.backend.connparams
    assert params["connection_class"] is redis.SSLConnection
    assert (params["ssl_cert_reqs"], params["ssl_ca_certs"]) == (ssl.CERT_REQUIRED, str(pem))


def test_celery_app_uses_tls_only_for_the_rediss_side():
    app = create_app(Settings(broker_url=PLAIN, result_backend=TLS))
    assert not app.conf.broker_use_ssl
    assert app.conf.redis_backend_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    app = create_app(Settings(broker_url=TLS, result_backend=PLAIN))
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert not app.conf.redis_backend_use_ssl
    assert app.backend.connparams.get("connection_class") is not redis.SSLConnection


def test_celery_app_keeps_its_timeouts_next_to_tls():
    app = create_app(Settings(broker_url=TLS))
    opts = app.conf.broker_transport_options
    assert all(opts[k] == v for k, v in connection_options().items())
