"""A run's lifecycle: start, resume, drive, cancel, detach, revise."""
