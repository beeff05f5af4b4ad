"""gateway: the HTTP API. Checks tokens and bodies, publishes commands, answers from replies."""
