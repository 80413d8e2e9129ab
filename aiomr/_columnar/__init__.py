"""Columnar batches: Arrow record batches read by the workers, handed to batch mappers.

Nothing here imports pyarrow, Polars or pandas until a job asks for them; without them a job
fails before any work starts with the extra to install (`aiomr._columnar.imports`).

* `imports`: the optional libraries, imported on first use, with install hints;
* `formats`: a batch as the mapper asked for it (``batch_format``): Arrow, Polars, pandas;
* `parquet_reader`: one split of a Parquet source (row groups of one file) and its reading
  in a worker.
"""
