"""The operators' HTTP API (aiohttp): subscribers, balances, events, health, metrics."""
