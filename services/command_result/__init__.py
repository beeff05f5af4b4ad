"""command-result: commands queued for agents, the results agents report, and their history."""
