"""`redact`: what no text may carry out of the process, whoever wrote it."""

import time

import pytest

from apps.core.redaction import REDACTED, configured_secrets, redact
from apps.core.settings import load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cannot connect to postgresql+asyncpg://crew:Hunter2-pw@db:5432/crew",
            f"cannot connect to postgresql+asyncpg://crew:{REDACTED}@db:5432/crew",
        ),
        ("redis://:p@ss@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        (
            "postgresql://crew@db/crew?password=Hunter2-pw&sslmode=require",
            f"postgresql://crew@db/crew?password={REDACTED}&sslmode=require",
        ),
        (
            "GET https://llm.example/v1?api_key=k-123&model=x",
            f"GET https://llm.example/v1?api_key={REDACTED}&model=x",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1&X-Amz-Signature=abc&x=1",
            f"https://b.s3.amazonaws.com/k?X-Amz-Credential={REDACTED}"
            f"&X-Amz-Signature={REDACTED}&x=1",
        ),
        (
            "HTTP 401: invalid header Authorization: Bearer sk-live-abcdef123456",
            f"HTTP 401: invalid header Authorization: Bearer {REDACTED}",
        ),
        (
            "{'authorization': 'Basic dXNlcjpwYXNz', 'accept': '*/*'}",
            f"{{'authorization': 'Basic {REDACTED}', 'accept': '*/*'}}",
        ),
        (
            '{"X-API-Key": "crew_abc", "api_key": "k"}',
            f'{{"X-API-Key": "{REDACTED}", "api_key": "{REDACTED}"}}',
        ),
        ("echoed bearer eyJhbGciOiJIUzI1NiJ9.x.y", f"echoed bearer {REDACTED}"),
        ("token=t-123&run_id=7", f"token={REDACTED}&run_id=7"),
    ],
)
def test_credentials_are_redacted_wherever_they_are(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        "http://127.0.0.1:8000/runs?status=failed&limit=20",
        "usage: prompt_tokens=12 completion_tokens=34",
        'password authentication failed for user "crew"',
        "a basic setting, the bearer of news",
        "missing API key: send X-API-Key or Authorization: Bearer",
    ],
)
def test_text_without_credentials_is_left_as_it_is(text: str) -> None:
    assert redact(text) == text


def test_configured_secrets_are_replaced_longest_first_with_the_marker_asked() -> None:
    text = "keys sk-live-0123456789 and sk-live-0123456789-long"
    secrets = ["sk-live-0123456789", "sk-live-0123456789-long"]
    assert redact(text, secrets, "***") == "keys *** and ***"


def test_the_settings_secrets_include_the_credentials_inside_their_urls() -> None:
    settings = load_settings(
        _env_file=None,
        api_key="admin-key-0123",
        sentry_dsn="https://pubkey0123@o1.ingest.sentry.io/42",
        database_url="postgresql://crew:db-pass-0123@db/crew",
        alembic_database_url="postgresql://crew@db/crew?password=alembic-pass-0123",
        openai_base_url="https://llm.example/v1?api_key=llm-key-0123",
    )
    assert set(configured_secrets(settings)) == {
        "admin-key-0123",
        "https://pubkey0123@o1.ingest.sentry.io/42",
        "pubkey0123",
        "db-pass-0123",
        "alembic-pass-0123",
        "llm-key-0123",
    }


@pytest.mark.parametrize(
    "text",
    [
        "a" * 65_536,
        "?" + "key" * 21_000,
        "authorization" * 5_000,
        "x://a:b" * 9_000,
        "http://u:" + "@" * 65_000,
        "authorization" + " " * 65_000 + "x",
    ],
    ids=["a long word", "a long parameter name", "repeated header", "schemes", "ats", "spaces"],
)
def test_redacting_text_a_client_wrote_takes_linear_time(text: str) -> None:
    """Every log line is redacted, and a client writes part of it (a 64 KB path): a pattern that
    backtracked took 3.3 s over 16 KB of letters, and a minute over 64 KB."""
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 1.0
