"""The worker: the loop that drives the engine (passes, leases, gate timeouts) and runs the nodes it
claims on their agents. It runs in the API process, or on its own as `crew-worker`."""
