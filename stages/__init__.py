"""One module per DVC stage: parse paths, read the params section, call the library."""
