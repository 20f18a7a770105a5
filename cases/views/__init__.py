"""The views of the cases app: the sender's confirm page and the agent workspace."""
