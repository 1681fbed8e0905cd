"""The roles an agent can play. Task specs name them and settings bind each to a model."""

from typing import Literal, get_args

Role = Literal["planner", "researcher", "writer", "reviewer", "editor", "analyst", "assembler"]
ROLES: tuple[str, ...] = get_args(Role)
