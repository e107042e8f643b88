"""Domain rules that are pure functions of their inputs and import nothing of the project,
so every layer may use them: the resident ID number (format, check digit, region, birth date,
age). The workflow applies them to orders and sessions; the identity engines (media/identity)
to what the OCR read from a card (docs/architecture.md, "Layers")."""
