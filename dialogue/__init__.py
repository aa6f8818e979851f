"""The policy, its turn format, SFT, PPO, the scoring service and the command line."""
