"""Product scripts (话术): YAML versions and the code that loads, lints and renders them."""
