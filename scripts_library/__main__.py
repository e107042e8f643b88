"""`python -m scripts_library ...`: the product owners' command line (see docs/scripts.md)."""

from scripts_library.cli import main

raise SystemExit(main())
