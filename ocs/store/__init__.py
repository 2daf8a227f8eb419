"""The balance store: Redis, its Lua scripts and the client that calls them."""
