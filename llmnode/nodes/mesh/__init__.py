"""The view of the mesh: signed state records, resources, load, reports (no I/O but the probe)."""
