"""The store: where a run keeps what every host must see, on a local folder or any filesystem
pyarrow reaches.

- ``store.store``: ``Store``, one location addressed by URI (shards, checkpoints, the rank-0
  model, manifests written last).
- ``store.probe``: before a cluster run, checks that the executors see the driver's store.
- ``store.stream``: ``ShardStream``, the per-rank streaming reader of shard files into
  ``model.fit`` (shuffle buffer, background prefetch), and ``read_shard_rows``.

Importing this package is cheap: its modules load pyarrow and Keras only when imported.
"""
