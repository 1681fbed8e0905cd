"""The agents nodes run on: the provider and model the settings bind each role to, and what a
call of theirs costs. Settings only hold the bindings and prices (LLM_ROLE_MODELS,
LLM_DEFAULT_PROVIDER, LLM_DEFAULT_MODEL, LLM_PRICES); what they mean for a node is decided here."""

from apps.core.roles import Role
from apps.core.settings import AgentBinding, Settings

# Providers that bill nothing, whatever the model is called there.
FREE_PROVIDERS = frozenset({"demo", "ollama"})


def agent_for(settings: Settings, role: Role) -> AgentBinding:
    """The agent bound to `role`, or the default provider and model."""
    bound = settings.llm_role_models.get(role)
    return bound or AgentBinding(
        provider=settings.llm_default_provider, model=settings.llm_default_model
    )


def cost_of(
    settings: Settings, provider: str, model: str, prompt_tokens: int, completion_tokens: int
) -> float:
    """Dollars a call cost; nothing for the demo provider, Ollama or an unpriced model."""
    price = None if provider in FREE_PROVIDERS else settings.llm_prices.get(model)
    if price is None:
        return 0.0
    return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1_000_000
