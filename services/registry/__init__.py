"""registry: owns source servers (register, update, read, delete) and their lifecycle state."""
