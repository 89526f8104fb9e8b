"""``python -m replicator``: the same CLI as the ``replicator`` command."""

from replicator.entry import main

if __name__ == "__main__":
    main()
