"""The operator console: server-rendered pages under /ui, with a few framework-free ES modules.

The console is the API's first client: its pages are rendered from the same reading functions the
API routes call, and its scripts call the API's own routes (streams, decisions, tasks) with the
session cookie instead of a key. `install_console` adds it to the app.
"""
