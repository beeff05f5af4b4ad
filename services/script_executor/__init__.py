"""script-executor: scripts, their executions on fleets in batches, and guest-VM commands."""
