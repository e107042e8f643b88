"""Application wiring: configuration, the aiohttp app factory, the embedded Redis, the CLI."""
