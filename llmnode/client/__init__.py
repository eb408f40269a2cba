"""The SDK: ``Mesh`` (async) and ``SyncMesh`` over the local node's control socket (I/O)."""
