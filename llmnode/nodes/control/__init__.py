"""The local control socket: wire framing, server, and dispatch of client requests (I/O)."""
