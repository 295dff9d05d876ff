"""The driver side of a run: the run loop, the Parsl session, pilots, delivery."""
