"""The encode step: images -> embedding stores (``store``), and the augmented views of the few-shot images
(``augmented``)."""
