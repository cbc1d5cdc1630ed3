"""Names and fixed values shared by every layer (no atm imports)."""

from __future__ import annotations

# dataruns.status
DATARUN_PENDING = "pending"
DATARUN_RUNNING = "running"
DATARUN_COMPLETE = "complete"
DATARUN_STOPPED = "stopped"
DATARUN_STATUSES = (DATARUN_PENDING, DATARUN_RUNNING, DATARUN_COMPLETE, DATARUN_STOPPED)
UNFINISHED_DATARUN_STATUSES = (DATARUN_PENDING, DATARUN_RUNNING)

# hyperpartitions.status
PARTITION_INCOMPLETE = "incomplete"
PARTITION_GRIDDING_DONE = "gridding_done"
PARTITION_ERRORED = "errored"
PARTITION_STATUSES = (PARTITION_INCOMPLETE, PARTITION_GRIDDING_DONE, PARTITION_ERRORED)

# classifiers.status
CLASSIFIER_RUNNING = "running"
CLASSIFIER_ERRORED = "errored"
CLASSIFIER_COMPLETE = "complete"
CLASSIFIER_STATUSES = (CLASSIFIER_RUNNING, CLASSIFIER_ERRORED, CLASSIFIER_COMPLETE)

# dataruns.budget_type
BUDGET_CLASSIFIER = "classifier"
BUDGET_WALLTIME = "walltime"
BUDGET_TYPES = (BUDGET_CLASSIFIER, BUDGET_WALLTIME)

# dataruns.score_target: what the user says -> the column that holds it
SCORE_TARGETS = {
    "cv": "cv_judgment_metric",
    "test": "test_judgment_metric",
    "mu_sigma": "mu_sigma_judgment_metric",
}

BINARY_METRICS = ("accuracy", "f1", "roc_auc", "ap", "mcc", "cohen_kappa")
MULTICLASS_METRICS = (
    "accuracy",
    "f1_micro",
    "f1_macro",
    "roc_auc_micro",
    "roc_auc_macro",
    "rank_accuracy",
    "cohen_kappa",
)
METRICS = (
    "accuracy",
    "rank_accuracy",
    "cohen_kappa",
    "f1",
    "f1_micro",
    "f1_macro",
    "roc_auc",
    "roc_auc_micro",
    "roc_auc_macro",
    "ap",
    "mcc",
)

TUNERS = ("uniform", "gp", "gp_ei", "gp_eivel")
SELECTORS = (
    "uniform",
    "ucb1",
    "bestk",
    "bestkvel",
    "purebestkvel",
    "recentk",
    "recentkvel",
    "hieralg",
)

DEFAULT_METHODS = ("logreg", "dt", "knn")
N_FOLDS = 5
TEST_FRACTION = 0.3
MAX_HYPERPARTITION_ERRORS = 3
# default cap (setting max_decompressed_mb) on what a compressed dataset file may hold
# once decompressed: a small .csv.gz must not expand to more than the machine's memory
MAX_DECOMPRESSED_MB = 1000.0

# error_message prefix of a classifier whose worker vanished
WORKER_LOST_PREFIX = "worker lost"
# error_message prefix of a classifier handed back because its files could not be written
STORAGE_ERROR_PREFIX = "storage error"
# Classifiers errored for these reasons were not at fault: their budget slot was returned,
# and they count neither as a score for the selector nor as a hyperpartition error.
HANDED_BACK_PREFIXES = (WORKER_LOST_PREFIX, STORAGE_ERROR_PREFIX)

DATARUN_DEFAULTS = {
    "budget": 100,
    "budget_type": BUDGET_CLASSIFIER,
    "metric": "f1",
    "score_target": "cv",
    "tuner": "uniform",
    "selector": "uniform",
    "k_window": 3,
    "r_minimum": 2,
    "gridding": 0,
    "priority": 1,
    "deadline": None,
    "methods": list(DEFAULT_METHODS),
    "description": None,
}
