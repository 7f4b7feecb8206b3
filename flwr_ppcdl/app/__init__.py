"""The Flower App and its experiments, built on the library (:mod:`flwr_ppcdl.clients`,
:mod:`flwr_ppcdl.strategies`); the library never imports this package.

* :mod:`.settings` -- :class:`RunSettings`, every run default, and the table of data sets;
* :mod:`.experiment` -- data, participants, model, evaluation (runtime-independent);
* :mod:`.factory`, :mod:`.recording`, :mod:`.report` -- the strategy a run asks for, what the server
  saw each round, and what a run writes (``result.json``, CSVs, plots);
* :mod:`.server_app`, :mod:`.client_app` -- the ServerApp and ClientApp of ``flwr run .``;
* :mod:`.grid` -- an in-process Flower Grid (sweeps, benchmarks, tests);
* :mod:`.sweep` -- Hydra sweeps; :mod:`.deploy` -- SuperLink + SuperNodes on loopback.
"""
