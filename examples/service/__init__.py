"""An example web service that embeds aiomr: word counts as jobs, live over Server-Sent Events.

See ``app.py`` (and ``README.md`` beside it) for how to run it.
"""
