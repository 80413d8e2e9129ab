"""Key-based jobs: specs, worker-side tasks, the shuffle, spilling, sorted runs, stable hashing.

::

    specs          ReduceByKey / GroupByKey / FoldByKey: what the user asked for
    phases         the caller side: map phase, reduce phase, results read back
    tasks          the worker side: map and reduce task bodies
    combine        map a chunk and combine its pairs by key: the hot loop
    shuffle        combine and partition each chunk; reduce each partition
    spill          key state under a memory budget, sorted runs beyond it
    spill_file     the runs one store spilled: one file, merge passes, removal
    sorted_runs    runs written as pickled batches, merged back by sort key
    order          keys in a checked total order (``sort=True``)
    hashing        a key hash that is the same in every process
    sizes          cheap estimates of what a key and its state hold
    result_files   the partitions' result files, read back in the caller
"""
