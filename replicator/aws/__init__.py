"""Everything that knows about AWS itself, apart from the pipeline's stages.

* :mod:`.clients`: the one place sessions and clients are built (default credential
  chain or an assumed role), and the :class:`~.clients.WriteClient` the writers call;
* :mod:`.errors`: AWS errors sorted by what the replicator must do about them;
* :mod:`.backoff`: the delay between retries of a request AWS may accept later;
* :mod:`.tables`: what a table's description says (key schema), and how messages say
  where a table is.
* :mod:`.queues`: the largest message an SQS queue takes, read from the queue.
"""
