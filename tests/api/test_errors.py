import httpx
from fastapi import FastAPI


async def test_an_unhandled_error_is_a_json_500_without_a_trace(app: FastAPI) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/explode")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret internals" not in response.text


async def test_an_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_a_wrong_method_is_a_json_405_naming_every_method_served_there(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/runs")
    assert response.status_code == 405
    assert response.json()["detail"] == "Method Not Allowed"
    assert response.headers["allow"] == "GET"
    # Two routes at one path: Starlette's 405 would name the first one's method only.
    both = await client.delete("/keys")
    assert both.status_code == 405
    assert both.headers["allow"] == "GET, POST"
    # A mounted app's own answer stands: a mount takes every method.
    static = await client.post("/ui/static/console.css")
    assert static.status_code == 405
    assert static.headers["allow"] == "GET, HEAD"


async def test_a_validation_error_has_a_readable_detail_and_the_error_list(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/runs", params={"limit": 1000})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "query limit: Input should be less than or equal to 200"
    assert body["errors"][0]["loc"] == ["query", "limit"]


async def test_a_body_that_cannot_be_read_says_why(client: httpx.AsyncClient) -> None:
    """FastAPI's own answer was "There was an error parsing the body", whatever was wrong."""
    json_type = {"Content-Type": "application/json"}
    not_utf8 = await client.post("/tasks", content=b'{"title": "\xff"}', headers=json_type)
    deep = await client.post("/tasks", content=b"[" * 100_000 + b"]" * 100_000, headers=json_type)

    assert (not_utf8.status_code, not_utf8.json()) == (
        400,
        {"detail": "the body is not UTF-8 text: byte 11 is invalid start byte"},
    )
    assert (deep.status_code, deep.json()) == (
        400,
        {"detail": "the body nests arrays or objects too deeply to be read"},
    )


async def test_a_parameter_given_twice_is_a_422_not_the_last_one_quietly(
    client: httpx.AsyncClient,
) -> None:
    """FastAPI keeps the last value: `?status=failed&status=running` listed running runs only."""
    both = await client.get("/runs", params=[("status", "failed"), ("status", "running")])
    paged = await client.get("/events", params=[("limit", "5"), ("type", "run.created")] * 2)
    undeclared = await client.get("/runs", params=[("utm", "a"), ("utm", "b")])

    assert (both.status_code, both.json()["detail"]) == (
        422,
        "query status: Given more than once; give one value",
    )
    assert paged.status_code == 422
    assert [error["loc"] for error in paged.json()["errors"]] == [
        ["query", "limit"],
        ["query", "type"],
    ]
    assert undeclared.status_code == 200
