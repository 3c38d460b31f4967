"""The in-cluster controller: drives each FederatedLearning resource through its rounds on the OCM hub.

Layers, outermost first:
- `fleet.controller.operator`: the kopf handlers and indices (watch streams kept in memory, so that a
  reconcile reads nothing from the API server) and the I/O of one reconcile;
- `fleet.controller.hub`: the few Kubernetes API calls it makes, with the official ``kubernetes`` client;
- `fleet.controller.reconcile`: one pure function, hub state in, desired objects, status and events out, on
  top of the shared phase machine `fleet.lifecycle`;
- `fleet.controller.objects`: the desired hub and spoke objects, as pure builders (each runtime's aggregator and
  collaborators from `fleet.runtimes`);
- `fleet.controller.observe`: what the objects' statuses say (pure);
- `fleet.controller.progress`, `fleet.controller.runs`: following the run, submitting it to Flower's SuperLink
  (each runtime's run backend: `fleet.runtimes.Runtime.run_backend`);
- `fleet.controller.metrics`: Prometheus metrics and the liveness/readiness endpoints;
- `fleet.controller.status`: the hub as a source for ``fleet status``.
"""
