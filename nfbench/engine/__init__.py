"""The engine: ``loop`` (``train(cfg)``: entry, setup, epochs, finish), ``epoch`` (one pass over the
training set), ``step`` (one training step, shared by the eager and the captured path), ``graph`` (the step
captured in a CUDA graph), ``evaluate``, ``state`` (the run's record and the loop's objects), ``metrics``
(the epoch's sums on the device), ``optim``, ``distributed``, ``preemption``, ``progress``, ``runtime``
(device, seeding, run directory) and ``validation`` (every check before any data loads).
"""
