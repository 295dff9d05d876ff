"""What runs inside a pilot. Standard library only: shipped as the worker runtime."""
