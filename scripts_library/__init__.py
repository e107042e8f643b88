"""Product scripts (话术): YAML versions and the code that loads, lints, renders, pre-renders them.

The public API, for the workflow and the API layer:

- `load_script(path)`, `load_script_text(text, source_name)` → `ScriptDocument` (or
  `ScriptLoadError` naming file, line and field);
- `lint(document)` → `list[LintFinding]`; `ensure_publishable(document)` raises `LintFailed` on any
  error (R-21, R-22);
- `content_hash(document)` identifies a version's content (R-23);
- `render(document, RenderContext(...))` → the concrete steps of one session (R-21, R-24);
- `static_speech_steps(document)` → the steps whose audio can be pre-rendered on publish;
- `diff_documents(old, new)` → a readable difference between two versions.
"""

from scripts_library.canonical import canonical_json, content_hash
from scripts_library.diff import ScriptDiff, diff_documents
from scripts_library.lint import (
    LintFailed,
    LintFinding,
    Severity,
    ensure_publishable,
    has_errors,
    lint,
)
from scripts_library.loader import LoadProblem, ScriptLoadError, load_script, load_script_text
from scripts_library.model import (
    AnswerRequirement,
    Channel,
    ProductGrade,
    ProductType,
    ScriptDocument,
    Speaker,
    Step,
    StepKind,
)
from scripts_library.render import (
    InvalidValueError,
    MissingValuesError,
    RenderContext,
    RenderedScript,
    RenderedStep,
    RenderError,
    render,
    static_speech_steps,
)

__all__ = [
    "AnswerRequirement",
    "Channel",
    "InvalidValueError",
    "LintFailed",
    "LintFinding",
    "LoadProblem",
    "MissingValuesError",
    "ProductGrade",
    "ProductType",
    "RenderContext",
    "RenderError",
    "RenderedScript",
    "RenderedStep",
    "ScriptDiff",
    "ScriptDocument",
    "ScriptLoadError",
    "Severity",
    "Speaker",
    "Step",
    "StepKind",
    "canonical_json",
    "content_hash",
    "diff_documents",
    "ensure_publishable",
    "has_errors",
    "lint",
    "load_script",
    "load_script_text",
    "render",
    "static_speech_steps",
]
