"""Artifacts: metadata lists and filters, one artifact with its sidecar, and its file."""

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from apps.core.database import SessionFactory, unit_of_work
from apps.core.settings import Settings
from apps.orchestrator.model.models import Artifact, Node, Run
from tests.api.pages import error_detail, events_cursor, every_page, get_json, single_page
from tests.factories import create_artifact, create_node, create_run, minutes_ago

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SECRET = b"top secret, outside the artifact store\n"


async def ids(client: httpx.AsyncClient, path: str, **params: Any) -> list[str]:
    return [artifact["id"] for artifact in await single_page(client, path, **params)]


async def walk(client: httpx.AsyncClient, path: str, limit: int, **params: Any) -> list[str]:
    return [artifact["id"] for artifact in await every_page(client, path, limit, **params)]


async def two_runs(
    sessions: SessionFactory, artifacts_dir: Path
) -> tuple[Run, Node, Node, Run, list[Artifact]]:
    """Run A (nodes a1, a2) and run B (node b1), with artifacts written in this order:
    a1/one, b1/one, a2/one, a1/two."""
    async with unit_of_work(sessions) as session:
        run_a = await create_run(session, title="A")
        a1 = await create_node(session, run_a, key="a1", position=0)
        a2 = await create_node(session, run_a, key="a2", position=1)
        run_b = await create_run(session, title="B")
        b1 = await create_node(session, run_b, key="b1", position=0)
        written = []
        for minutes, node, name in [
            (4, a1, "one.md"),
            (3, b1, "one.md"),
            (2, a2, "one.md"),
            (1, a1, "two.md"),
        ]:
            written.append(
                await create_artifact(
                    session, node, artifacts_dir, name=name, created_at=minutes_ago(minutes, NOW)
                )
            )
    return run_a, a1, a2, run_b, written


async def test_artifacts_are_listed_oldest_first(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    *_, written = await two_runs(sessions, settings.artifacts_dir)

    assert await ids(client, "/artifacts") == [str(artifact.id) for artifact in written]


async def test_a_runs_artifacts_are_only_its_own(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    run_a, _, _, run_b, written = await two_runs(sessions, settings.artifacts_dir)
    of_a = [str(written[0].id), str(written[2].id), str(written[3].id)]

    assert await ids(client, f"/runs/{run_a.id}/artifacts") == of_a
    assert await ids(client, "/artifacts", run_id=str(run_a.id)) == of_a
    assert await ids(client, f"/runs/{run_b.id}/artifacts") == [str(written[1].id)]


async def test_artifacts_filter_by_node_and_by_run_and_node(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    run_a, a1, a2, run_b, written = await two_runs(sessions, settings.artifacts_dir)

    assert await ids(client, "/artifacts", node_id=str(a1.id)) == [
        str(written[0].id),
        str(written[3].id),
    ]
    assert await ids(client, "/artifacts", run_id=str(run_a.id), node_id=str(a2.id)) == [
        str(written[2].id)
    ]
    assert await ids(client, "/artifacts", run_id=str(run_b.id), node_id=str(a1.id)) == []


async def test_a_run_without_artifacts_has_an_empty_list(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)

    assert await get_json(client, f"/runs/{run.id}/artifacts") == {"items": [], "next_cursor": None}


async def test_walking_every_page_yields_every_artifact_once_in_order(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        written = [
            await create_artifact(
                session,
                node,
                settings.artifacts_dir,
                name=f"part-{index}.md",
                created_at=NOW + timedelta(seconds=seconds),
            )
            for index, seconds in enumerate([0, 2, 0, 1, 0, 2, 0.5])
        ]
    expected = [str(a.id) for a in sorted(written, key=lambda a: (a.created_at, a.id))]

    for limit in (1, 2, 3, 7):
        assert await walk(client, "/artifacts", limit) == expected
        assert await walk(client, f"/runs/{run.id}/artifacts", limit) == expected
        assert await walk(client, "/artifacts", limit, node_id=str(node.id)) == expected


async def test_an_artifact_cursor_of_another_list_is_400(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    run, cursor = await events_cursor(client, sessions)

    for path in ("/artifacts", f"/runs/{run.id}/artifacts"):
        assert "cursor" in await error_detail(client, path, 400, cursor=cursor)


async def test_garbled_artifact_cursor_is_400(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/artifacts", 400, cursor="garbage")

    assert "cursor" in detail


@pytest.mark.parametrize("limit", ["0", "201", "many"])
async def test_a_bad_artifact_limit_is_422(client: httpx.AsyncClient, limit: str) -> None:
    detail = await error_detail(client, "/artifacts", 422, limit=limit)

    assert "limit" in detail


async def test_artifacts_of_an_unknown_run_are_404_naming_it(client: httpx.AsyncClient) -> None:
    run_id = uuid.uuid4()

    for path, params in [
        (f"/runs/{run_id}/artifacts", {}),
        ("/artifacts", {"run_id": str(run_id)}),
    ]:
        assert str(run_id) in await error_detail(client, path, 404, **params)


async def test_a_malformed_run_id_filter_is_422(client: httpx.AsyncClient) -> None:
    detail = await error_detail(client, "/artifacts", 422, run_id="run-1")

    assert "run_id" in detail


async def test_an_artifact_has_its_metadata_and_sidecar(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    sidecar = {
        "version": 1,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "latency_ms": 812,
        "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165},
        "cost": 0.000045,
        "prompts": {"system": "You are a writer.", "user": "Write the introduction."},
        "timestamps": {"started_at": "2024-06-01T11:58:00Z", "finished_at": "2024-06-01T11:58:01Z"},
    }
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run, provider="openai", model="gpt-4o-mini")
        artifact = await create_artifact(
            session,
            node,
            settings.artifacts_dir,
            content=b'{"title": "Introduction"}',
            name="introduction.json",
            media_type="application/json",
            created_at=minutes_ago(1, NOW),
            sidecar=sidecar | {"run_id": str(run.id), "node_id": str(node.id)},
        )

    body = await get_json(client, f"/artifacts/{artifact.id}")

    assert datetime.fromisoformat(body.pop("created_at")) == minutes_ago(1, NOW)
    assert body == {
        "id": str(artifact.id),
        "run_id": str(run.id),
        "node_id": str(node.id),
        "name": "introduction.json",
        "media_type": "application/json",
        "size": 25,
        "sha256": hashlib.sha256(b'{"title": "Introduction"}').hexdigest(),
        "sidecar": sidecar | {"run_id": str(run.id), "node_id": str(node.id)},
    }
    assert "storage_key" not in body


async def test_a_listed_artifact_is_the_same_as_the_artifact_itself(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    run_a, *_ = await two_runs(sessions, settings.artifacts_dir)

    listed = await single_page(client, f"/runs/{run_a.id}/artifacts")

    for item in listed:
        assert await get_json(client, f"/artifacts/{item['id']}") == item


async def test_listed_sidecars_leave_their_prompts_to_the_artifact_itself(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    """A prompt carries the outputs of the node's dependencies: an assembler's may be
    megabytes, and a page of 200 of them was unbounded."""
    upstream = "## A section the assembler was given\n" * 20_000
    sidecar = {"version": 1, "provider": "demo", "model": "demo-1", "cost": 0.0}
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        nodes = [await create_node(session, run, key=f"n{i}", position=i) for i in range(10)]
        for node in nodes:
            prompts = {"system": "Assemble.", "user": upstream}
            await create_artifact(
                session, node, settings.artifacts_dir, sidecar=sidecar | {"prompts": prompts}
            )

    page = await client.get(f"/runs/{run.id}/artifacts", params={"limit": 200})
    filtered = await client.get("/artifacts", params={"run_id": str(run.id)})

    assert len(upstream) * 10 > 7_000_000
    assert len(page.content) < 10_000
    for item in [*page.json()["items"], *filtered.json()["items"]]:
        assert item["sidecar"] == sidecar
        whole = await get_json(client, f"/artifacts/{item['id']}")
        assert whole["sidecar"]["prompts"]["user"] == upstream
        assert whole == item | {"sidecar": sidecar | {"prompts": whole["sidecar"]["prompts"]}}


async def test_unknown_artifact_is_404_naming_it(client: httpx.AsyncClient) -> None:
    artifact_id = uuid.uuid4()

    for path in (f"/artifacts/{artifact_id}", f"/artifacts/{artifact_id}/content"):
        assert str(artifact_id) in await error_detail(client, path, 404)


async def test_malformed_artifact_id_is_422(client: httpx.AsyncClient) -> None:
    for path in ("/artifacts/intro.md", "/artifacts/intro.md/content"):
        await error_detail(client, path, 422)


async def test_content_is_the_exact_bytes_with_the_media_type_of_the_row(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    content = bytes(range(256)) * 3
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        artifact = await create_artifact(
            session,
            node,
            settings.artifacts_dir,
            content=content,
            name="chart.png",
            media_type="image/png",
        )

    response = await client.get(f"/artifacts/{artifact.id}/content")

    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["content-disposition"].startswith("inline")
    assert "chart.png" in response.headers["content-disposition"]
    # What a model wrote runs no script in the API's origin (tests/console: in Chromium).
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy


async def test_text_content_keeps_its_markdown_media_type(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    content = "# Introduction\n\nÉté 2024 — résumé.\n".encode()
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        artifact = await create_artifact(session, node, settings.artifacts_dir, content=content)

    response = await client.get(f"/artifacts/{artifact.id}/content")

    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"].split(";")[0] == "text/markdown"


async def create_artifact_at(sessions: SessionFactory, settings: Settings, key: str) -> Artifact:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        return await create_artifact(
            session, node, settings.artifacts_dir, storage_key=key, media_type="text/plain"
        )


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../../etc/passwd", id="dot-dot"),
        pytest.param("{to_filesystem_root}etc/passwd", id="dot-dot-to-etc-passwd"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("../secret.txt", id="dot-dot-to-sibling"),
        pytest.param("run/node/../../../secret.txt", id="dot-dot-inside-the-key"),
        pytest.param("{secret}", id="absolute-to-sibling"),
    ],
)
async def test_content_outside_the_artifacts_dir_is_refused(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings, key: str
) -> None:
    root = settings.artifacts_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    secret = root.parent / "secret.txt"
    secret.write_bytes(SECRET)
    to_filesystem_root = "../" * (len(root.parts) - 1)
    storage_key = key.format(to_filesystem_root=to_filesystem_root, secret=secret)
    artifact = await create_artifact_at(sessions, settings, storage_key)

    response = await client.get(f"/artifacts/{artifact.id}/content")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "root:" not in response.text
    assert SECRET.decode() not in response.text


async def test_a_symlink_inside_the_artifacts_dir_pointing_outside_is_refused(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    secret = settings.artifacts_dir.resolve().parent / "secret.txt"
    secret.write_bytes(SECRET)
    link = settings.artifacts_dir / "run" / "node" / "leak.md"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    passwd_link = settings.artifacts_dir / "run" / "node" / "passwd.md"
    passwd_link.symlink_to("/etc/passwd")

    for key in ("run/node/leak.md", "run/node/passwd.md"):
        artifact = await create_artifact_at(sessions, settings, key)
        response = await client.get(f"/artifacts/{artifact.id}/content")
        assert response.status_code == 404
        assert SECRET.decode() not in response.text
        assert "root:" not in response.text


async def test_a_symlink_to_a_file_inside_the_artifacts_dir_is_served(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    target = settings.artifacts_dir / "shared" / "logo.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"logo")
    (settings.artifacts_dir / "alias.txt").symlink_to(target)
    artifact = await create_artifact_at(sessions, settings, "alias.txt")

    response = await client.get(f"/artifacts/{artifact.id}/content")

    assert response.status_code == 200
    assert response.content == b"logo"


async def test_a_missing_file_is_404(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    artifact = await create_artifact_at(sessions, settings, "run/node/never-written.md")

    detail = await error_detail(client, f"/artifacts/{artifact.id}/content", 404)

    assert detail


async def test_a_directory_is_not_served_as_content(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    (settings.artifacts_dir / "run" / "node").mkdir(parents=True)
    artifact = await create_artifact_at(sessions, settings, "run/node")

    detail = await error_detail(client, f"/artifacts/{artifact.id}/content", 404)

    assert detail


# PostgreSQL refuses to store such JSON at all.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stored_sidecar_sqlite_cannot_read_does_not_break_the_list(
    client: httpx.AsyncClient, sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        run = await create_run(session)
        node = await create_node(session, run)
        broken = await create_artifact(session, node, settings.artifacts_dir)
        await session.execute(
            text("UPDATE artifacts SET sidecar = :sidecar WHERE id = :id"),
            {"sidecar": '{"version": 1, "cost": NaN, "prompts": {}}', "id": broken.id.hex},
        )

    listed = await client.get(f"/runs/{run.id}/artifacts")

    assert listed.status_code == 200
    assert listed.json()["items"][0]["sidecar"]["version"] == 1
