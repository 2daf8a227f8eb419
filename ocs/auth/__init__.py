"""Who is calling and what they may do: credentials (API keys, users, JWTs), the access
policy, the tamper-evident audit log, network-element authentication (docs/security.md)."""
