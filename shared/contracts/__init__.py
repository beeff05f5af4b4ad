"""The wire contract: every HTTP body, command and event as one pydantic model.

The gateway validates with these models, the owning service decodes with them,
and `rehost schemas` publishes their JSON Schema for integrators.
"""
