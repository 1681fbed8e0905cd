"""A query parameter given more than once is refused. Every parameter of the API takes one value
(several types of event are one comma-separated `type`), and FastAPI keeps the last of those
given: `?status=failed&status=running` listed the running runs alone, as if asked for them."""

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel


def _names(field: Any) -> set[str]:
    """The names a query parameter takes in a URL: a model's (`RunsQuery`), field by field."""
    annotation = field.field_info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {info.alias or name for name, info in annotation.model_fields.items()}
    return {field.alias}


def _declared(route: Any) -> set[str]:
    """The query parameters of `route` and of its dependencies, by the names clients use."""
    names: set[str] = set()
    dependants = [route.dependant] if isinstance(route, APIRoute) else []
    while dependants:
        dependant = dependants.pop()
        for field in dependant.query_params:
            names |= _names(field)
        dependants.extend(dependant.dependencies)
    return names


async def refuse_repeated_query(request: Request) -> None:
    """A 422 naming each parameter of the route that the query string gives more than once
    (one the route does not take is left alone, as it is when given once)."""
    given = [name for name, _ in request.query_params.multi_items()]
    if len(given) == len(set(given)):
        return
    declared = _declared(request.scope.get("route"))
    repeated = sorted({name for name in given if name in declared and given.count(name) > 1})
    if repeated:
        raise RequestValidationError(
            [
                {
                    "type": "repeated",
                    "loc": ("query", name),
                    "msg": "Given more than once; give one value",
                    "input": request.query_params.getlist(name),
                }
                for name in repeated
            ]
        )
