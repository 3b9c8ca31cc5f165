"""MLflow tracking of numgrad runs: every record journaled locally, then sent to the store.

- :mod:`~numgrad.tracking.uri`: which store, checked before any run exists;
- :mod:`~numgrad.tracking.records`: run names, params, sampled steps, MLflow's limits;
- :mod:`~numgrad.tracking.entries`: what a journal record may hold, checked on reading;
- :mod:`~numgrad.tracking.journal`: the run journal on disk, and its one reader;
- :mod:`~numgrad.tracking.provenance`: who ran a run (tags, git commit, orphans);
- :mod:`~numgrad.tracking.mlflow_store`: the store, as one object;
- :mod:`~numgrad.tracking.uploader`: how a record reaches MLflow: a journal into a store;
- :mod:`~numgrad.tracking.backoff`: when to try a store that went away again;
- :mod:`~numgrad.tracking.weights`: a ``.npy`` checked from its header before it is loaded;
- :mod:`~numgrad.tracking.recorder`: journal first, then the store, through outages;
- :mod:`~numgrad.tracking.history`: ``history.csv``, bounded;
- :mod:`~numgrad.tracking.files`: the other files a run keeps and uploads;
- :mod:`~numgrad.tracking.dataset`: the training data as an MLflow dataset input;
- :mod:`~numgrad.tracking.model`: the final SimpleNet as an MLflow logged model, and
  :mod:`~numgrad.tracking.pyfunc_folder` its folder
  (:mod:`~numgrad.tracking.simplenet_pyfunc` is the model's code);
- :mod:`~numgrad.tracking.ending`: how a run ends: status, final metrics, description;
- :mod:`~numgrad.tracking.pages`: a run's page in the MLflow UI;
- :mod:`~numgrad.tracking.sink`: what the runner hands its records to;
- :mod:`~numgrad.tracking.logged`: a logged run read back (a warm start's W0, a rerun's config);
- :mod:`~numgrad.tracking.sync`: ``numgrad-sync``.

Only ``mlflow_store``, ``model`` and ``pyfunc_folder`` import mlflow, and only when a
store is opened or a model sent: ``tracking.enabled=false`` and ``tracking.offline=true``
never load it.
"""
