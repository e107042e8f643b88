"""Infrastructure below the composition root (app/) and the adapters (api/, bot/): the
configuration, the database context, Redis (client and the embedded server), the background
jobs, the cluster membership and the call rooms of the cluster. app/ wires these together;
api/, bot/ and reporting/ use them without importing app/ (docs/architecture.md, "Layers")."""
