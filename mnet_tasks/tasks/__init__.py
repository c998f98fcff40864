"""The built-in tasks, one package each, registered through the same entry points as any plug-in."""
