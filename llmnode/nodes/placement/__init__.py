"""Where each model lives: deployments, the pure ``place`` function, memory and autoscaling.

Every node computes the same assignment from the same view (no master): ``place`` is
deterministic, reads no clock and no random source, and breaks ties by a hash of the node id.
"""
