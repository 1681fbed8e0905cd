"""`crew` against a served API, on SQLite and PostgreSQL: every command, as an operator types it,
with the exit statuses that tell outcomes apart."""

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from crew_client import GateStatus, RunStatus
from tests.cli.running import CREW, crew, crew_env, crew_json
from tests.client.serving import GATED_SPEC, Served, served, wait_for_gate
from tests.conftest import ROOT, process_env

__all__ = ["served"]

# Runs a command with SIGINT as a terminal's foreground command has it. A background job of a
# non-interactive shell starts with SIGINT ignored, and so would every process the tests start.
WITH_CTRL_C = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _gated_run(server: Served, tmp_path: Path, title: str) -> str:
    spec = tmp_path / f"{title}.yaml"
    spec.write_text(yaml.safe_dump(GATED_SPEC))
    run = crew_json(server, "submit", "--spec", str(spec), "--title", title)
    with server.client() as client:
        wait_for_gate(client, run["id"])
    return str(run["id"])


def test_submit_the_demo_and_watch_it_finish(served: Served) -> None:
    done = crew(served, "submit", "--demo", "--title", "Demo", "--watch")

    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout


def test_the_reading_commands(served: Served, tmp_path: Path) -> None:
    run = crew_json(served, "submit", "--report", "--sections", "2", "--title", "Report")
    assert crew(served, "watch", run["id"]).returncode == 0
    listed = crew_json(served, "runs", "--search", "Report", "--limit", "5")
    assert [item["id"] for item in listed["items"]] == [run["id"]]
    assert crew_json(served, "show", run["id"])["status"] == RunStatus.SUCCEEDED
    plain = crew(served, "runs", "--status", "succeeded")
    assert run["id"] in plain.stdout and "\t" in plain.stdout  # a pipe gets plain columns
    shown = crew(served, "show", run["id"])
    assert "succeeded" in shown.stdout and "tokens" in shown.stdout
    nodes = crew_json(served, "nodes", run["id"])
    assert nodes and all(node["status"] == "succeeded" for node in nodes)
    assert nodes[0]["key"] in crew(served, "nodes", run["id"]).stdout
    events = crew(served, "events", run["id"]).stdout.splitlines()
    assert "run.created" in events[0] and "run.succeeded" in events[-1]
    followed = crew(served, "events", run["id"], "--follow", "--json").stdout.splitlines()
    assert [json.loads(line)["type"] for line in followed][-1] == "run.succeeded"
    with served.client() as client:
        artifact = list(client.iter_artifacts(run_id=run["id"]))[-1]
        content = client.get_artifact_content(artifact.id)
    assert crew(served, "artifact", str(artifact.id)).stdout.encode() == content
    target = tmp_path / "report.md"
    assert crew(served, "artifact", str(artifact.id), "-o", str(target)).returncode == 0
    assert target.read_bytes() == content


def test_events_of_some_types_listed_and_followed(served: Served) -> None:
    run = crew_json(served, "submit", "--demo", "--title", "Typed")
    assert crew(served, "watch", run["id"]).returncode == 0
    wanted = "node.succeeded,run.succeeded"

    listed = crew(served, "events", run["id"], "--type", wanted, "--json").stdout.splitlines()
    followed = crew(served, "events", run["id"], "-f", "--type", wanted, "--json").stdout
    misspelt = crew(served, "events", run["id"], "--type", "node.succeded")

    types = [json.loads(line)["type"] for line in listed]
    assert set(types) == {"node.succeeded", "run.succeeded"} and types[-1] == "run.succeeded"
    assert [json.loads(line)["type"] for line in followed.splitlines()] == types
    assert misspelt.returncode == 64
    assert misspelt.stderr.startswith("error: not a type of event: 'node.succeded'; the types are")


def test_gates_approve_with_a_patch_file_and_with_an_editor(served: Served, tmp_path: Path) -> None:
    run_id = _gated_run(served, tmp_path, "Patched")
    inbox = crew_json(served, "gates", "--run", run_id)
    assert [gate["node_key"] for gate in inbox] == ["draft"]
    assert "draft" in crew(served, "gates").stdout
    patch = tmp_path / "draft.md"
    patch.write_text("a haiku, patched")
    approved = crew(served, "approve", run_id, "--node", "draft", "--patch-file", str(patch))
    assert approved.returncode == 0, approved.stderr
    assert crew(served, "watch", run_id).returncode == 0

    edited_id = _gated_run(served, tmp_path, "Edited")
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\necho "a haiku, edited" > "$1"\n')
    editor.chmod(0o755)
    done = crew(served, "approve", edited_id, "--edit", "--notes", "tidied", EDITOR=str(editor))
    assert done.returncode == 0, done.stderr
    assert crew(served, "watch", edited_id).returncode == 0
    with served.client() as client:
        gate = client.list_gates(status="approved", run_id=edited_id).items[0]
        assert gate.artifact_id is not None
        draft = [a for a in client.iter_artifacts(run_id=edited_id) if a.node_id == gate.node_id]
        assert client.get_artifact_content(draft[-1].id) == b"a haiku, edited\n"


def _editor(tmp_path: Path, name: str, script: str) -> str:
    editor = tmp_path / name
    editor.write_text(f"#!/bin/sh\n{script}\n")
    editor.chmod(0o755)
    return str(editor)


def test_an_edit_that_is_no_edit_approves_nothing(served: Served, tmp_path: Path) -> None:
    run_id = _gated_run(served, tmp_path, "Unedited")
    why_by_editor = {
        "true": "the editor saved nothing",
        "false": "the editor failed",
        str(tmp_path / "no-such-editor"): "the editor failed",
        _editor(tmp_path, "touch.sh", 'touch "$1"'): "the edit changed nothing",
        _editor(tmp_path, "newline.sh", 'echo >> "$1"'): "the edit changed nothing",
        _editor(tmp_path, "empty.sh", ': > "$1"'): "the edit left the artifact empty",
        _editor(tmp_path, "latin1.sh", "printf 'caf\\351' > \"$1\""): "is not UTF-8 text",
    }
    for editor, why in why_by_editor.items():
        done = crew(served, "approve", run_id, "--edit", EDITOR=editor)

        assert done.returncode == 64, (editor, done.stderr)
        assert done.stderr.startswith("error: ") and why in done.stderr, done.stderr
        assert "nothing was approved" in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
    with served.client() as client:
        assert client.list_gates(status=GateStatus.PENDING, run_id=run_id).items
        assert "gate.approved" not in {event.type for event in client.iter_events(run_id=run_id)}


def test_a_gate_decided_elsewhere_is_exit_7(served: Served, tmp_path: Path) -> None:
    run_id = _gated_run(served, tmp_path, "Decided")
    assert crew(served, "approve", run_id).returncode == 0
    late = crew(served, "reject", run_id, "--node", "draft", "--notes", "too late")
    assert late.returncode == 7
    assert late.stderr.startswith("error: ") and "approved" in late.stderr
    assert len(late.stderr.strip().splitlines()) == 1


def test_reject_fail_cancel_resume_and_watch_statuses(served: Served, tmp_path: Path) -> None:
    failed = _gated_run(served, tmp_path, "Failed")
    assert crew(served, "reject", failed, "--notes", "no", "--fail").returncode == 0
    assert crew(served, "watch", failed).returncode == 1

    cancelled = _gated_run(served, tmp_path, "Cancelled")
    assert "cancelling" in crew(served, "cancel", cancelled).stdout
    assert crew(served, "watch", cancelled).returncode == 2
    assert crew(served, "resume", cancelled).returncode == 0
    with served.client() as client:
        wait_for_gate(client, cancelled)


def test_ctrl_c_stops_watching_and_leaves_the_run_running(served: Served, tmp_path: Path) -> None:
    run_id = _gated_run(served, tmp_path, "Watched")
    watcher = subprocess.Popen(
        [sys.executable, "-c", WITH_CTRL_C, CREW, "watch", run_id],
        env=crew_env(served),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupted once it shows the run: in its first moments, under the tests' coverage, the
    # interrupt can land in coverage's import, which swallows it.
    assert watcher.stdout is not None
    assert "waiting" in watcher.stdout.readline()
    watcher.send_signal(signal.SIGINT)
    _, stderr = watcher.communicate(timeout=30)

    assert watcher.returncode == 130
    assert "keeps running" in stderr
    with served.client() as client:
        assert client.get_run(run_id).status == RunStatus.WAITING


def test_keys_over_http(served: Served) -> None:
    created = crew_json(served, "keys", "create", "ci-bot", "--role", "operator")
    assert created["secret"].startswith("crew_")
    assert "ci-bot" in [key["name"] for key in crew_json(served, "keys", "list")]
    assert "ci-bot" in crew(served, "keys", "list").stdout
    cased = crew(served, "keys", "create", "CI-Bot")
    assert (cased.returncode, cased.stdout) == (7, "")
    assert cased.stderr.startswith(
        "error: an API key named 'ci-bot' already exists, and 'CI-Bot' differs from it only in "
        "case; choose another name"
    )
    assert crew(served, "keys", "revoke", "ci-bot").returncode == 0
    assert crew(served, "keys", "revoke", "ci-bot").returncode == 7
    as_bot = crew(served, "runs", CREW_API_KEY=created["secret"])
    assert as_bot.returncode == 4


def test_errors_are_one_line_with_distinct_exit_statuses(served: Served, tmp_path: Path) -> None:
    missing = crew(served, "show", "5c1b2b6e-0000-4000-8000-000000000000")
    assert missing.returncode == 6 and "not found" in missing.stderr
    refused = crew(served, "runs", CREW_API_KEY="crew_nope")
    assert refused.returncode == 4 and "invalid API key" in refused.stderr
    with served.client() as client:
        viewer = client.create_key("read-only", "viewer").secret
    forbidden = crew(served, "submit", "--demo", "--title", "No", CREW_API_KEY=viewer)
    assert forbidden.returncode == 5
    empty_plan = tmp_path / "empty.json"
    empty_plan.write_text('{"type": "dag", "nodes": []}')
    invalid = crew(served, "submit", "--spec", str(empty_plan), "--title", "Empty")
    assert invalid.returncode == 8 and "nodes" in invalid.stderr
    unreachable = crew(served, "runs", CREW_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 3
    both = crew(served, "submit", "--demo", "--report", "--title", "Two")
    assert both.returncode == 64
    for failure in (missing, refused, forbidden, invalid, unreachable, both):
        assert len(failure.stderr.strip().splitlines()) == 1, failure.stderr


RUN = "5c1b2b6e-0000-4000-8000-000000000000"
# Commands given something that is not an id where one goes, none of which may send a request.
NOT_IDS = [
    ("cancel", "../keys/victim/revoke?"),
    ("resume", "../keys/victim/revoke?"),
    ("show", "../keys"),
    ("show", f"{RUN}?x=1"),
    ("show", ""),
    ("nodes", "../keys"),
    ("events", "../events"),
    ("events", "", "--follow"),
    ("watch", f"{RUN}/../../keys"),
    ("artifact", "../keys"),
    ("approve", "../keys/victim/revoke?"),
    ("approve", "..", "--node", "draft"),
    ("reject", "../keys/victim/revoke?", "--notes", "no"),
    ("gates", "--run", "../keys"),
    ("keys", "revoke", "../runs"),
    ("keys", "revoke", "victim/revoke?"),
]


def test_an_id_that_is_not_one_reaches_no_route(served: Served) -> None:
    assert crew(served, "keys", "create", "victim", "--role", "viewer").returncode == 0

    smuggled = crew(served, "cancel", "../keys/victim/revoke?")

    assert smuggled.returncode == 64, smuggled.stderr
    assert smuggled.stderr == "error: '../keys/victim/revoke?' is not a run id (a UUID)\n"
    keys = {key["name"]: key for key in crew_json(served, "keys", "list")}
    assert keys["victim"]["revoked_at"] is None
    assert "/keys/victim/revoke" not in served.log()


@pytest.mark.parametrize("arguments", NOT_IDS, ids=" ".join)
def test_a_bad_id_is_a_usage_error_before_any_request(
    served: Served, arguments: tuple[str, ...]
) -> None:
    # Nothing listens on port 9: a request would be exit 3.
    refused = crew(served, *arguments, CREW_URL="http://127.0.0.1:9")

    assert refused.returncode == 64, refused.stderr
    assert refused.stderr.startswith("error: ") and "is not a" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1, refused.stderr


def _files(tmp_path: Path) -> dict[str, Path]:
    contents = {
        "latin1.yaml": b"\xff\xfe",
        "latin1.md": b"caf\xe9",
        "broken.yaml": b"type: demo\nnodes: [a: b: c\n",
        "dated.yaml": b"type: demo\ndue: 2025-01-01\n",
        "nan.yaml": b"type: demo\nratio: .nan\n",
        "broken.json": b'{"title": ',
        "nan.json": b'{"title": NaN}',
    }
    for name, content in contents.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in contents} | {"missing": tmp_path / "missing.yaml"}


def test_a_file_that_cannot_be_read_is_one_line_and_sends_nothing(
    served: Served, tmp_path: Path
) -> None:
    files = _files(tmp_path)
    submit = ("submit", "--title", "From a file", "--spec")
    approve = ("approve", RUN, "--node", "draft", "--patch-file")
    why_by_command = {
        (*submit, files["latin1.yaml"]): "is not UTF-8 text (byte 0xff at offset 0)",
        (*submit, files["broken.yaml"]): "is not JSON or YAML: ",
        (*submit, files["dated.yaml"]): "holds what JSON cannot",
        (*submit, files["nan.yaml"]): "holds what JSON cannot",
        (*submit, files["missing"]): "No such file or directory",
        (*submit, tmp_path): "Is a directory",
        (*approve, files["latin1.md"]): "is not UTF-8 text (byte 0xe9 at offset 3)",
        (*approve, files["broken.json"]): "is not JSON: ",
        (*approve, files["nan.json"]): "NaN is not a JSON value",
        (*approve, files["missing"]): "No such file or directory",
        (*approve, tmp_path): "Is a directory",
    }
    for command, why in why_by_command.items():
        # Nothing listens on port 9: a request would be exit 3.
        done = crew(served, *map(str, command), CREW_URL="http://127.0.0.1:9")

        assert done.returncode == 64, (command, done.stderr)
        assert done.stderr.startswith("error: ") and why in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_an_artifact_that_cannot_be_written_is_one_line(served: Served, tmp_path: Path) -> None:
    run = crew_json(served, "submit", "--demo", "--title", "Written")
    assert crew(served, "watch", run["id"]).returncode == 0
    with served.client() as client:
        artifact = str(next(iter(client.iter_artifacts(run_id=run["id"]))).id)
    why_by_target = {
        tmp_path: "Is a directory",
        tmp_path / "no" / "such" / "dir.md": "No such file or directory",
    }
    for target, why in why_by_target.items():
        done = crew(served, "artifact", artifact, "-o", str(target))

        assert done.returncode == 64, done.stderr
        assert done.stderr == f"error: cannot write {target}: {why}\n"
    assert not (tmp_path / "no").exists()


@pytest.fixture
def sign_in_page() -> Iterator[str]:
    """The URL of a server that answers every request with a page, as a proxy's sign-in does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><form>Sign in</form></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_the_apis_is_exit_9(
    served: Served, sign_in_page: str, tmp_path: Path
) -> None:
    written = tmp_path / "artifact.md"
    for arguments in (
        ("show", RUN),
        ("runs",),
        ("gates",),
        ("events", RUN, "--follow"),
        ("artifact", RUN, "-o", str(written)),
    ):
        done = crew(served, *arguments, CREW_URL=sign_in_page)

        assert done.returncode == 9, done.stderr
        assert done.stderr.startswith("error: GET /") and "is the URL the API's?" in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not written.exists()


def _readme_crew_block() -> list[str]:
    """The command lines of the README's `crew` examples, comments left out."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The `crew` command", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines()]


def test_the_readmes_crew_examples_run_as_written(served: Served) -> None:
    venv = Path(sys.executable).parent.parent
    if venv.name != ".venv":
        pytest.skip("the README's commands are for the checkout's .venv")
    lines = _readme_crew_block()
    first_crew = next(i for i, line in enumerate(lines) if line.startswith("crew "))
    setup = lines[:first_crew]
    # A shell as a reader's: PATH without the virtualenv, in the checkout that holds it.
    script = " && ".join([*setup, f"export CREW_URL={served.url}", lines[first_crew]])
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=venv.parent,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, (script, done.stderr)
    assert "succeeded" in done.stdout


def test_shell_completion_is_offered(served: Served) -> None:
    helped = crew(served, "--help")
    assert "--install-completion" in helped.stdout
    completion = crew(served, "--show-completion", SHELL="/bin/bash")
    assert completion.returncode == 0 and "complete" in completion.stdout
