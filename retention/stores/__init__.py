"""Store adapters: the only modules that talk to databases (and, later, file trees)."""
