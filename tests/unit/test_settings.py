"""tasks/settings.py: settings from INFERQ_* variables, validation, and redaction of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import constants as C
from tasks.errors import ConfigError
from tasks.settings import POSITIVE_SETTINGS, Settings, redact_url

SECRET = "s3cr3t-pa55"


def test_empty_environ_gives_the_documented_defaults():
    s = Settings.from_env({})
    assert s.broker_url == C.DEFAULT_BROKER_URL
    assert s.result_backend == C.DEFAULT_BROKER_URL
    assert s.models_dir == Path(C.DEFAULT_MODELS_DIR)
    assert s.cache_ttl_s == C.DEFAULT_CACHE_TTL_S == 86_400
    assert s.threads == 1
    assert s.max_payload_bytes == C.DEFAULT_MAX_PAYLOAD_BYTES


def test_from_env_reads_only_the_given_mapping_not_os_environ(monkeypatch):
    monkeypatch.setenv("INFERQ_THREADS", "7")
    assert Settings.from_env({}).threads == 1
    assert Settings.from_env().threads == 7


def test_broker_url_is_read_and_result_backend_defaults_to_it():
    s = Settings.from_env({"INFERQ_BROKER_URL": "redis://broker:6380/2"})
    assert s.broker_url == "redis://broker:6380/2"
    assert s.result_backend == "redis://broker:6380/2"


def test_result_backend_can_differ_from_broker():
    s = Settings.from_env(
        {"INFERQ_BROKER_URL": "redis://broker:6379/0", "INFERQ_RESULT_BACKEND": "rediss://cache:6379/1"}
    )
    assert s.broker_url == "redis://broker:6379/0"
    assert s.result_backend == "rediss://cache:6379/1"


def test_unix_socket_urls_are_accepted():
    s = Settings.from_env({"INFERQ_BROKER_URL": "unix:///tmp/redis.sock"})
    assert s.result_backend == "unix:///tmp/redis.sock"


@pytest.mark.parametrize(
    ("environ", "ttl"),
    [
        ({"INFERQ_CACHE_TTL_S": "60"}, 60),
        ({"INFERQ_CACHE_TTL": "90"}, 90),
        ({"INFERQ_CACHE_TTL_S": "60", "INFERQ_CACHE_TTL": "90"}, 60),
    ],
)
def test_cache_ttl_is_read_from_either_name_and_the_full_name_wins(environ, ttl):
    assert Settings.from_env(environ).cache_ttl_s == ttl


def test_int_and_path_fields_are_coerced():
    s = Settings.from_env(
        {
            "INFERQ_THREADS": "4",
            "INFERQ_CONCURRENCY": " 3 ",
            "INFERQ_MAX_PAYLOAD_BYTES": "1024",
            "INFERQ_MODELS_DIR": "/srv/models",
            "INFERQ_LOG_LEVEL": "DEBUG",
        }
    )
    assert (s.threads, s.concurrency, s.max_payload_bytes) == (4, 3, 1024)
    assert s.models_dir == Path("/srv/models")
    assert isinstance(s.models_dir, Path)
    assert s.log_level == "DEBUG"


def test_overrides_win_over_environ_and_none_overrides_are_ignored():
    s = Settings.from_env({"INFERQ_THREADS": "4", "INFERQ_PREFETCH": "8"}, threads=2, prefetch=None)
    assert s.threads == 2
    assert s.prefetch == 8


@pytest.mark.parametrize(
    ("var", "raw"),
    [("INFERQ_THREADS", "four"), ("INFERQ_MAX_PAYLOAD_BYTES", "1.5"), ("INFERQ_CACHE_TTL_S", "")],
)
def test_bad_int_raises_config_error_naming_the_variable(var, raw):
    with pytest.raises(ConfigError, match=rf"^{var} must be an integer, got {raw!r}$"):
        Settings.from_env({var: raw})


def test_bad_short_cache_ttl_names_the_variable_that_was_set():
    with pytest.raises(ConfigError, match=r"^INFERQ_CACHE_TTL must be an integer"):
        Settings.from_env({"INFERQ_CACHE_TTL": "a day"})


@pytest.mark.parametrize("field", ["cache_ttl_s", "threads", "concurrency", "max_payload_bytes", "prefetch"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_counts_are_refused_naming_the_variable(field, value):
    var = f"INFERQ_{field.upper()}"
    with pytest.raises(ConfigError, match=rf"^setting {field} \({var}\) must be > 0, got {value}$"):
        Settings.from_env({var: value})


@pytest.mark.parametrize("field", POSITIVE_SETTINGS)
def test_every_positive_setting_read_as_zero_names_its_variable(field):
    var = f"INFERQ_{field.upper()}"
    with pytest.raises(ConfigError, match=rf"^setting {field} \({var}\) must be > 0, got 0"):
        Settings.from_env({var: "0"})


def test_non_positive_short_cache_ttl_names_the_variable_that_was_set():
    with pytest.raises(ConfigError, match=r"^setting cache_ttl_s \(INFERQ_CACHE_TTL\) must be > 0, got 0$"):
        Settings.from_env({"INFERQ_CACHE_TTL": "0"})


def test_non_positive_setting_given_in_code_is_refused_by_its_name_alone():
    with pytest.raises(ConfigError, match=r"^setting threads must be > 0, got 0$"):
        Settings(threads=0)


@pytest.mark.parametrize("url", ["amqp://guest@localhost//", "http://redis:6379", "localhost:6379", "sqs://"])
def test_non_redis_broker_scheme_is_refused(url):
    with pytest.raises(ConfigError, match=r"setting broker_url must be a redis://, rediss:// or unix:// URL"):
        Settings.from_env({"INFERQ_BROKER_URL": url})


def test_non_redis_result_backend_scheme_is_refused_naming_the_scheme():
    with pytest.raises(ConfigError, match=r"setting result_backend must be .* got scheme 'db\+postgresql'"):
        Settings.from_env({"INFERQ_RESULT_BACKEND": "db+postgresql://u:p@h/db"})


def test_settings_are_immutable_and_with_returns_a_changed_copy():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.threads = 3  # type: ignore[misc]
    t = s.with_(threads=3, prefetch=None)
    assert (t.threads, t.prefetch) == (3, s.prefetch)
    assert s.threads == 1


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
        (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
        (
            f"rediss://user:{SECRET}@host/1?ssl_cert_reqs=required",
            "rediss://user:***@host/1?ssl_cert_reqs=required",
        ),
        (f"redis://u:{SECRET}@host", "redis://u:***@host"),
        (f"rediss://:{SECRET}@host:6380/0", "rediss://:***@host:6380/0"),
        (f"rediss://default:{SECRET}@[::1]:6380", "rediss://default:***@[::1]:6380"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_redact_url_hides_only_the_password(url, redacted):
    assert redact_url(url) == redacted


def test_redact_url_hides_a_password_containing_at_and_colon():
    out = redact_url("redis://user:p@ss:w0rd@host:6379/0")
    assert out == "redis://user:***@host:6379/0"
    assert "p@ss" not in out
    assert "w0rd" not in out


def test_redact_url_keeps_ipv6_brackets():
    assert redact_url(f"redis://:{SECRET}@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_public_never_contains_a_password():
    s = Settings.from_env(
        {
            "INFERQ_BROKER_URL": f"redis://:{SECRET}@broker:6379/0",
            "INFERQ_FLOWER_PASSWORD": SECRET,
        }
    )
    pub = s.public()
    assert SECRET not in repr(pub)
    assert pub["broker_url"] == "redis://:***@broker:6379/0"
    assert pub["result_backend"] == "redis://:***@broker:6379/0"
    assert pub["flower_password"] == "***"
    assert pub["models_dir"] == "models"
    assert pub["threads"] == 1


def test_public_hides_passwords_of_rediss_urls_with_and_without_a_user():
    s = Settings.from_env(
        {
            "INFERQ_BROKER_URL": f"rediss://:{SECRET}@broker:6380/0",
            "INFERQ_RESULT_BACKEND": f"rediss://app:{SECRET}@cache:6380/1",
            "INFERQ_REDIS_CA_CERTS": "/etc/inferq/ca.pem",
        }
    )
    pub = s.public()
    assert SECRET not in repr(pub)
    assert pub["broker_url"] == "rediss://:***@broker:6380/0"
    assert pub["result_backend"] == "rediss://app:***@cache:6380/1"
    assert pub["redis_ca_certs"] == "/etc/inferq/ca.pem"  # a path, not a secret


def test_tls_settings_default_to_verifying_with_the_system_trust_store():
    s = Settings.from_env({})
    assert (s.redis_ca_certs, s.redis_certfile, s.redis_keyfile) == ("", "", "")
    assert s.redis_cert_reqs == "required"


def test_tls_settings_are_read_from_the_environment():
    s = Settings.from_env(
        {
            "INFERQ_REDIS_CA_CERTS": "/tls/ca.pem",
            "INFERQ_REDIS_CERTFILE": "/tls/client.pem",
            "INFERQ_REDIS_KEYFILE": "/tls/client.key",
            "INFERQ_REDIS_CERT_REQS": "none",
        }
    )
    assert (s.redis_ca_certs, s.redis_certfile, s.redis_keyfile) == (
        "/tls/ca.pem",
        "/tls/client.pem",
        "/tls/client.key",
    )
    assert s.redis_cert_reqs == "none"
    assert Settings.from_env(s.env()) == s


@pytest.mark.parametrize("value", ["", "optional", "CERT_NONE", "false"])
def test_unknown_redis_cert_reqs_is_refused(value):
    with pytest.raises(ConfigError, match=r"redis_cert_reqs must be one of \['required', 'none'\]"):
        Settings.from_env({"INFERQ_REDIS_CERT_REQS": value})


def test_a_client_key_without_its_certificate_is_refused():
    with pytest.raises(ConfigError, match="redis_keyfile needs redis_certfile"):
        Settings.from_env({"INFERQ_REDIS_KEYFILE": "/tls/client.key"})


@pytest.mark.parametrize(
    "url",
    [
        "rediss://cache:6380/0?ssl_cert_reqs=none",
        "rediss://cache:6380/0?ssl_cert_reqs=",
        "rediss://cache:6380/0?db=1&ssl_ca_certs=/tmp/ca.pem",
    ],
)
def test_tls_options_in_a_url_are_refused_pointing_at_the_settings(url):
    with pytest.raises(
        ConfigError, match=r"setting result_backend carries TLS options .*INFERQ_REDIS_CA_CERTS"
    ):
        Settings.from_env({"INFERQ_BROKER_URL": "redis://broker:6379/0", "INFERQ_RESULT_BACKEND": url})


def test_public_shows_an_unset_flower_password_as_empty():
    assert Settings.from_env({}).public()["flower_password"] == ""


def test_public_lists_every_setting():
    assert set(Settings.from_env({}).public()) == set(Settings.__dataclass_fields__)


def test_env_round_trips_through_from_env():
    s = Settings.from_env(
        {
            "INFERQ_BROKER_URL": f"redis://:{SECRET}@broker:6379/0",
            "INFERQ_RESULT_BACKEND": "redis://cache:6379/3",
            "INFERQ_MODELS_DIR": "/srv/models",
            "INFERQ_CACHE_TTL": "120",
            "INFERQ_THREADS": "2",
            "INFERQ_FLOWER_PASSWORD": SECRET,
            "INFERQ_LOG_LEVEL": "WARNING",
        }
    )
    env = s.env()
    assert all(k.startswith("INFERQ_") and isinstance(v, str) for k, v in env.items())
    assert env["INFERQ_CACHE_TTL_S"] == "120"
    assert Settings.from_env(env) == s


def test_env_round_trips_defaults():
    s = Settings.from_env({})
    assert Settings.from_env(s.env()) == s
