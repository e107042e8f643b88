"""Deployment: the local cluster launcher (HAProxy, app nodes, worker, Redis, PostgreSQL) and
the HAProxy configuration it writes; docs/architecture.md maps it to production."""
