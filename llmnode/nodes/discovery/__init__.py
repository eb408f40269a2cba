"""Finding the mesh: seed addresses and LAN beacons (I/O)."""
