"""What the orchestrator runs on outside its database: artifact stores, LLM providers, and what
wakes the event feed."""
