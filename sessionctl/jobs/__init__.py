"""Job logic, independent of the queue: what a purge does, step by step.

Nothing here imports arq; ``sessionctl/worker/`` adapts these procedures to it, so the queue could be
swapped by changing that package alone.
"""
