"""Turn what the store knows into text, JSON and (later) HTML for people and scripts."""
