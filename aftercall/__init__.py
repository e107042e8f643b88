"""The after-call runtime (aftercall/runtime.py): the periodic sweep and the background jobs that
run QA (qa/) and then the archive (archive/) on sealed sessions. It sits above both, so neither
imports the other's runtime (docs/architecture.md, "Layers")."""
