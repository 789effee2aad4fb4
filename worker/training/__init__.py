"""Training core: build the model per method, tokenize the data, run the loop in a child process."""
