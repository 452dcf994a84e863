"""What a finished run means: the layer above the engine.

* :mod:`~executor.results.predict`: the simulator's step from the run's own costs (the
  fit) and from a profile, and where the profile's error comes from;
* :mod:`~executor.results.report`: the files a run writes and the table it prints;
* :mod:`~executor.results.held`: measured and predicted activation memory;
* :mod:`~executor.results.dispatch`: host time around ops, read off a trace;
* :mod:`~executor.results.device`: the summary's device keys;
* :mod:`~executor.results.profile`: ``python -m executor profile``, made of runs.

Everything here imports the engine (:mod:`executor.engine`), never the other way round.
"""
