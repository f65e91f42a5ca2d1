"""Traffic policies, the router, analysis gates and the rollout controller."""
