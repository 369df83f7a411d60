"""Training the prompt head: run plans, the loop, saved runs."""
