"""The shared client library of the scheduler, the controllers and the agent.

One module per job; import the modules, not their names:

- ``resources``: ``Resource`` (group, version, plural, scope, kind) and the built-in kinds;
- ``config``: a ``ClientConfig`` from a kubeconfig or from a pod's service account;
- ``api``: ``ApiClient``, plain-dict CRUD, patch, bind, evict and ``watch`` over HTTPS, or
  in-process through ``transport`` in the edge profile; ``watch`` decodes the stream;
- ``errors``: ``ApiError`` (the server's Status), ``TransportError``, ``ConfigError``;
- ``store`` and ``informer``: caches kept by list-then-watch, indexes, handlers, and the
  ``InformerFactory`` that shares them within a process (nothing polls the API);
- ``workqueue``: client-go's rate-limited work queue, and ``run_worker``;
- ``leader``: leader election on a Lease; ``events``: the event recorder;
- ``types`` (the contracts), ``clock`` and ``fake`` (an in-memory API) for tests.
"""
