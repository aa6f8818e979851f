"""The policy model: a causal LM with a value head, its tokenizer and the text it reads and writes."""
