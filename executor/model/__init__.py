"""The data pilot works on: the job graph, workflows, states, units, config fields."""
