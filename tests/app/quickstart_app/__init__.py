"""A small Flower App in the shape of Flower's quickstart-pytorch, written here for the drop-in test.

A small CNN, plain SGD clients (``ClientApp`` with ``@app.train`` / ``@app.evaluate``), in-memory
synthetic images, every client honest, a ``ServerApp`` that runs ``Strategy(...).start(...)``. The
strategy class is the one name ``server_app.Strategy``: swapping Flower's FedAvg for
``ReliabilityWeightedFedAvg`` is that one line.
"""
