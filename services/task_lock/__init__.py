"""task-lock: migration tasks and the lock each running task holds on its target server."""
