"""The names fmsearch writes into Optuna and MLflow records, each spelled once.

Trial user attributes (``*_ATTR`` on trials), study and trial system attributes, and MLflow run
tags (``*_TAG``) are read back by other processes, other versions and the report, so that a
name is a format: everything that reads or writes one imports it from here.
"""

# Optuna: study system attributes -------------------------------------------------------------

ARCH_ATTR = "fmsearch.arch"
OBJECTIVES_ATTR = "objectives"
# How the study's trials train (search.run.workers.SearchSettings), for workers on other hosts.
SETTINGS_ATTR = "fmsearch.settings"
# The planned search's plan (search.budget.plan.Plan), for the ladder in every worker.
PLAN_ATTR = "fmsearch.plan"
# Ensemble trials whose distilled single model is served in their place: {number: student}.
DISTILLED_ATTR = "fmsearch.distilled"
# A fine-tuning study's source: the champion's configuration, its model, the grid.
FINETUNE_ATTR = "fmsearch.finetune"
# A worker writes this to learn that the storage takes writes again after an outage.
PROBE_ATTR = "fmsearch.storage_probe"

# Optuna: trial system attributes --------------------------------------------------------------

# The heartbeat interval of the worker running a trial.
HEARTBEAT_ATTR = "fmsearch.heartbeat_interval"

# Optuna: trial user attributes ----------------------------------------------------------------

RUN_ID_ATTR = "mlflow_run_id"
# What the tracking store missed for good (it was down): a list of names.
UNLOGGED_ATTR = "mlflow_unlogged"
LATENCY_ATTR = "latency_ms"
# The Keras dtype policy the trial's model was built with (float32, mixed_bfloat16, ...).
DTYPE_POLICY_ATTR = "dtype_policy"
# True on a trial that the search's time budget ended before its last epoch.
OUT_OF_TIME_ATTR = "out_of_time"
FAIL_REASON_ATTR = "fail_reason"
# host:pid of the worker that ran the trial.
WORKER_ATTR = "worker"
# The Keras Tuner trial (its id) that an --engine keras-tuner trial ran for.
KT_TRIAL_ATTR = "keras_tuner_trial"
EPOCHS_ATTR = "epochs"
BEST_EPOCH_ATTR = "best_epoch"
N_PARAMS_ATTR = "n_params"
LOG_SECONDS_ATTR = "log_seconds"
# A refit trial: the search's best configuration trained again on all the training images,
# unpruned, for its own number of epochs. REFIT_ATTR holds the number of the trial it refits.
REFIT_ATTR = "refit_of"
REFIT_EPOCHS_ATTR = "refit_epochs"
# The most epochs a refit's decaying schedule may be lengthened to when its time holds more
# than REFIT_EPOCHS_ATTR (a planned search's final, planned from slower epochs than its own).
STRETCH_TO_ATTR = "stretch_to"
TRAIN_IMAGES_ATTR = "train_images"
TRAIN_SECONDS_ATTR = "train_seconds"
# Seconds of a steady epoch (the first, which traces the steps, left out): what a plan
# extrapolates to the finals from.
EPOCH_SECONDS_ATTR = "epoch_seconds"
# A trial that stands for an ensemble of finished trials (their numbers), not a training of
# its own; TTA_ATTR: whether it averages in the mirrored images' predictions too.
ENSEMBLE_ATTR = "ensemble_of"
TTA_ATTR = "tta"
# A trial whose model replaces another's at promotion (``--final-on-all-data``): the same
# configuration (or combination) trained again with the validation images among its
# training images. Its value is the validated value of the trial it stands in for, since a
# model cannot be validated on images it trained on; it never competes on that value.
STANDS_IN_ATTR = "stands_in_for"
# A single model trained on an ensemble trial's soft labels: the ensemble trial's number.
DISTILLED_FROM_ATTR = "distilled_from"
# A planned search's trial: its rung of the ladder (0: the smallest data), the trial it was
# promoted from, and whether it is one of the finals that train the winners at full fidelity.
RUNG_ATTR = "rung"
PROMOTED_FROM_ATTR = "promoted_from"
FINAL_ATTR = "final"
# The study's baseline: its first enqueued configuration ("published", or a recipe's name).
BASELINE_ATTR = "baseline"

# MLflow: run tags -----------------------------------------------------------------------------

PARENT_TAG = "mlflow.parentRunId"
# study, trial, ensemble, promotion, eda, explain, ...
ROLE_TAG = "fmsearch.role"
STUDY_TAG = "fmsearch.study"
ARCH_TAG = "fmsearch.arch"
TRIAL_TAG = "fmsearch.trial_number"
STATE_TAG = "fmsearch.trial_state"
REASON_TAG = "fmsearch.reason"
# On the run of a refit trial: the number of the trial whose configuration it trains again.
REFIT_TAG = "fmsearch.refit_of"
# On the run of a planned search's trial: its rung of the ladder (0: the smallest data).
RUNG_TAG = "fmsearch.rung"
# On a model trained with the validation images among its training images: the trial (or
# ensemble trial) it replaces at promotion; its val_* metrics are not a validation.
STANDS_IN_TAG = "fmsearch.stands_in_for"
MODEL_URI_TAG = "fmsearch.model_uri"
FLAVOR_TAG = "fmsearch.flavor"
# Packages a model needs beyond its flavor's own (xgboost), comma-separated.
EXTRA_PACKAGES_TAG = "fmsearch.extra_packages"
# On an ensemble's run: its members' model URIs (comma-separated), and whether each also
# predicts the mirrored images (flip test-time augmentation).
MEMBERS_TAG = "fmsearch.members"
TTA_TAG = "fmsearch.tta"
SOURCE_RUN_TAG = "fmsearch.source_run_id"
SOURCE_TRIAL_TAG = "fmsearch.source_trial"
DECISION_TAG = "fmsearch.decision"
# On a study's parent run: what the ensemble step and --final-on-all-data decided.
ENSEMBLE_TAG = "fmsearch.ensemble"
FINAL_ON_ALL_DATA_TAG = "fmsearch.final_on_all_data"
DISTILL_TAG = "fmsearch.distill"
# On an explanation's run: the index of the test image it explains.
INDEX_TAG = "fmsearch.index"
# On a reproduction's parent run: the source recipe it trains (spaces.recipes).
RECIPE_TAG = "fmsearch.recipe"
# On a fine-tuning study's parent run: the model it starts from.
FINETUNE_OF_TAG = "fmsearch.finetune_of"
# On a planned study's parent run resumed with a new plan: each headline figure of that plan
# (MLflow params never change), as PLAN_TAG_PREFIX + the param's name.
PLAN_TAG_PREFIX = "fmsearch."

# MLflow: registry tags ------------------------------------------------------------------------

TEST_ACCURACY_TAG = "test_accuracy"
TEST_MACRO_F1_TAG = "test_macro_f1"
TEST_LOSS_TAG = "test_loss"
# On a registered version: its study's baseline judged on the same test images (JSON: trial,
# label, confusion matrix).
BASELINE_TAG = "fmsearch.baseline"
LOCK_HOLDER_TAG = "fmsearch.lock_holder"
LOCK_EXPIRES_TAG = "fmsearch.lock_expires"
