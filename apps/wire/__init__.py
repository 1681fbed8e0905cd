"""What the API and its clients share: the request and response models the OpenAPI document
declares, the statuses of runs, nodes and gates, and how timestamps are written.

Nothing here imports FastAPI, SQLAlchemy or the domain, so the Python client (`crew_client`)
reads answers into the very models the API declares without installing the server's half.
"""
