"""Reward stages (intent, retrieval, satisfaction), their weighted composite and their trainers."""
