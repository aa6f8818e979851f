"""Training the policy: SFT on the logs, and PPO (rollouts, credit, GAE, the clipped update, the loop)."""
