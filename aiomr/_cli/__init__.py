"""The ``aiomr`` command's parts: loading a job, running it, and the built-in jobs
(`aiomr.cli` parses the arguments)."""
