"""Tortoise ORM models and their migrations (R-53).

The model modules are listed in `MODEL_MODULES`; the app, the CLI and the tests load exactly these.
"""

MODEL_MODULES = [
    "models.org",
    "models.people",
    "models.sales",
    "models.sessions",
    "models.audit",
    "models.channels",
    "models.qa",
    "models.archive",
    "models.seal_keys",
]

# The first line of a model docstring becomes a table comment, and Tortoise 1.1 neither escapes
# quotes in it nor protects semicolons (its SQLite schema editor splits statements on ";"):
# keep apostrophes and semicolons out of the first line of model class docstrings.
