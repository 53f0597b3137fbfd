"""Cluster elasticity: a pure policy (policy.py), actuators (actuators.py) and the loop that joins them (server.py). See docs/elasticity.md."""
