"""Rehost's processes: the gateway, the services behind it, and the agent."""
