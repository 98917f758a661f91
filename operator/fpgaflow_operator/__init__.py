"""The Kopf operator: Experiments on Kubernetes (installed as fpgaflow_operator)."""
