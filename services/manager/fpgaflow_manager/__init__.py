"""fpgaflow's experiment manager: `fpgaflow server`, a persistent queue of Experiments in the run store, each
run by an executor (local processes, Kubernetes through the operator, Slurm through sbatch), and the client
(`fpgaflow submit`, `queue`, `cancel`, `watch`, `logs`, `resources`; ``fpgaflow_manager.client`` in Python).

- ``queue``: the order and the admission under the limits, pure functions.
- ``manager``: the server's logic (submit, cancel, the scheduling loop, watch, logs), no gRPC.
- ``executors``: where a run happens; one module each.
- ``job``: the wrapper of one attempt of a run (its lock and exit file).
- ``server`` and ``client``: the gRPC boundary (protos/fpgaflow_manager.proto), its authentication and its
  errors, mapped once each way.
"""

DEFAULT_PORT = 7750  # where `fpgaflow server` listens, and its clients call, unless told otherwise
SERVER_FILE = "server.json"  # in the run store: the local server's address and token
