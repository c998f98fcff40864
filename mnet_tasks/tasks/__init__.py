"""Lightning task modules; each builds the shared backbone from the ``backbone`` config group."""
