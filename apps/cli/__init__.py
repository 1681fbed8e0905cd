"""The commands: serve the API, run a worker, plan and run a task, manage API keys. Each is a
`[project.scripts]` entry of pyproject.toml."""
