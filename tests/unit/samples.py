"""Policy documents the unit tests share (not a test module)."""

# The story of schemas/README.md: protect postgres, kill /batch first, then /web.
STORY = {
    "name": "pg-batch-web",
    "rules": [
        {"match": {"comm": "postgres"}, "action": "protect"},
        {"match": {"cgroup": "/batch"}, "action": "prefer", "tier": 1},
        {"match": {"cgroup": "/web"}, "action": "prefer", "tier": 2},
    ],
}
