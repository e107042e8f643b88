"""The web front: customer H5 pages, agent console, script editor, QA replay, and their routes."""
