"""A one-node SLURM test cluster: Debian packages, config templates and the session fixture (cluster.py)."""
