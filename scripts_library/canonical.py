"""Canonical form and content hash of a script version (R-23: sessions pin version and hash).

The hash covers the parsed document, not the YAML bytes: comments, key order, quoting and
defaults written out or left implicit do not change it; any change of meaning does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from scripts_library.model import ScriptDocument

# Fields added after versions were published: left out while unset, so the content hash of a
# version written before them does not change.
_LATER_STEP_FIELDS = ("max_cer",)


def canonical_data(document: ScriptDocument) -> dict[str, Any]:
    """The document as plain JSON-compatible data, defaults included."""
    data = document.model_dump(mode="json")
    for step in data["steps"]:
        for name in _LATER_STEP_FIELDS:
            if step.get(name) is None:
                step.pop(name, None)
    return data


def canonical_json(document: ScriptDocument) -> str:
    """Deterministic JSON text of the document: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(
        canonical_data(document), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )


def content_hash(document: ScriptDocument) -> str:
    """`sha256:<hex>` of the canonical JSON; identifies a published version's content."""
    digest = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"
