"""Database drivers, shared by the query sources (`aiomr.sources`) and the row sink
(`aiomr.sinks`): what aiomr needs from a driver, one module per driver, connections and
their cleanup, ``COPY`` text, and the caller-side readers of range and page splits."""
