"""The session workflow: the state machine of one remote double-recording and its rules.

Adapters (the JSON API, the H5 pages, the channels, the media workers) change a session only
through this package. It never sees aiohttp requests or WeChat objects.
"""
