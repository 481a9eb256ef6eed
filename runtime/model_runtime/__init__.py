"""The model side of modelrollout: focal-loss XGBoost trainer, MLflow sweep, inference server.

OpenMP threads (XGBoost's and the focal kernel's) wait passively unless the deployment says otherwise:
spinning threads burn a CPU-limited pod's CFS quota and, on a busy node, slowed training by 10-20x
in our measurements (docs/model-runtime.md). It only takes effect if set before libgomp loads, which
is why it lives here, ahead of any xgboost/numba import.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
