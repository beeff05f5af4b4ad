"""Test helpers: the broker, the system's processes, and an integrator's view of events."""
