"""The data a pipeline reads and writes: dataset readers (``readers``), the prepared store and its index
(``prepared``), embedding stores (``embeddings``), a task's view of them (``tasks``), encoded views (``views``) and
the demo's phantoms (``phantoms``)."""
