"""fleet: federated learning across an Open Cluster Management fleet, declared in Git."""

__version__ = "0.1.0"
