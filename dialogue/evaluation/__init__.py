"""Held-out evaluation: episodes played by each agent, their summaries and the HTML report."""
