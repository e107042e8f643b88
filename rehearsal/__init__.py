"""Synthetic parties that play a whole session over the public API, with real media: the
customer (invitation, consents, a real identity check with a synthetic card and liveness clip,
the call with a face on camera and a voice, answers, documents, handwriting) and the agent
(call, script, the steps read in person, completion). For the README walk, demos and the
benchmarks; `python -m app rehearse --help`.

They do exactly what the pages do (h5/static/customer.js, console.js), through HTTP, the live
socket and WebRTC only: no database, no in-process shortcuts, so every fail-closed rule of the
server applies to them as to a person.
"""
