"""An example package shipped to the workers (see ../workflow.yaml)."""
