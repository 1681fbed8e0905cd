"""The names plans use: the roles an agent can play and the keys of nodes. Task specs name them,
settings bind each role to a model, and gate policies give rules to roles and keys."""

from typing import Annotated, Literal, get_args

from pydantic import StringConstraints

Role = Literal["planner", "researcher", "writer", "reviewer", "editor", "analyst", "assembler"]
ROLES: tuple[str, ...] = get_args(Role)

NODE_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
NodeKey = Annotated[str, StringConstraints(pattern=NODE_KEY_PATTERN)]
